#include "config.h"
#include "unit.h"
static void test_todo(void **s){(void)s;}
int main(void){const struct CMUnitTest tests[]={cmocka_unit_test(test_todo)};return cmocka_run_group_tests_name("timeout", tests, NULL, NULL);}
