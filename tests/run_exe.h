/* Runs the kred command ($KRED_EXE, which tests/meson.build sets) with the environment
 * assignments env and the arguments args, through the shell: its exit status (-1 when it
 * did not exit), its stdout and stderr together in out (cut to len - 1 bytes). For suites
 * that include <check.h>, <stdio.h>, <stdlib.h>, <string.h> and <sys/wait.h>. */
#ifndef KRED_TEST_RUN_EXE_H
#define KRED_TEST_RUN_EXE_H

static inline int run_exe(const char *env, const char *args, char *out, size_t len)
{
	const char *exe = getenv("KRED_EXE");
	char cmd[2048];
	FILE *p;
	size_t n;
	int status;

	ck_assert_msg(exe && *exe, "KRED_EXE is not set (tests/meson.build sets it)");
	snprintf(cmd, sizeof(cmd), "env %s '%s' %s 2>&1", env, exe, args);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	/* All of it, keeping the start: a reader that stops early kills the writer. */
	n = 0;
	for (;;) {
		char buf[4096];
		size_t got = fread(buf, 1, sizeof(buf), p);

		if (got == 0)
			break;
		if (n < len - 1) {
			size_t keep = got < len - 1 - n ? got : len - 1 - n;

			memcpy(out + n, buf, keep);
			n += keep;
		}
	}
	out[n] = 0;
	status = pclose(p);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#endif
