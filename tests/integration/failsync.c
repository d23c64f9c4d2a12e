/*
 * failsync.c: an LD_PRELOAD shim for the fault tests. While the file named by
 * FAILSYNC_FILE exists, fdatasync() fails with EIO, as on a dying disk; the
 * daemon under test is the real one, only the system call is made to fail.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

int fdatasync(int fd);

/* fdatasync(), or EIO while FAILSYNC_FILE exists. */
int
fdatasync(int fd)
{
	static int (*real)(int);
	const char *flag = getenv("FAILSYNC_FILE");

	if (flag != NULL && access(flag, F_OK) == 0) {
		errno = EIO;
		return -1;
	}
	if (real == NULL && (real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync")) == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real(fd);
}
