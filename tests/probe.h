/* Whether a backend can run here, asked in a child process: the suites' skip-or-fail
 * decision must not initialise a device API in the process that Check then forks. */
#ifndef KRED_TEST_PROBE_H
#define KRED_TEST_PROBE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "kred.h"
#include "test_config.h"

/*
 * Check runs each test in a fork of the main process, and a device platform initialised
 * before a fork does not survive into the children: POCL's worker threads stay in the
 * parent (the child's first kernel waits forever; kred says so instead), a CUDA context
 * is not valid in a child. So the main process opens the backend in a child of its own,
 * which exits, and never touches the device itself. The host and reference backends are
 * opened in place.
 *
 * Returns kred_context_create's status for backend; msg receives kred_errmsg.
 */
static inline kred_status probe_backend(const char *backend, char *msg, size_t len)
{
	kred_context_options o = { 0 };
	kred_context *c = NULL;
	kred_status st;
	int fd[2], status = 0;
	ssize_t n = 0;
	pid_t pid;

	o.struct_size = sizeof(o);
	o.backend = backend;
	msg[0] = 0;
	if (!strcmp(backend, "host") || !strcmp(backend, "reference") || pipe(fd) != 0) {
		st = kred_context_create(&o, &c);
		snprintf(msg, len, "%s", kred_errmsg(c));
		kred_context_destroy(c);
		return st;
	}
	pid = fork();
	if (pid == 0) {
		st = kred_context_create(&o, &c);
		if (write(fd[1], kred_errmsg(c), strlen(kred_errmsg(c))) < 0)
			st = KRED_EIO;
		_exit((int)st);
	}
	close(fd[1]);
	if (pid > 0)
		n = read(fd[0], msg, len - 1);
	msg[n > 0 ? n : 0] = 0;
	close(fd[0]);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
		snprintf(msg, len, "the probe of backend %s crashed", backend);
		return KRED_EDEVICE;
	}
	return (kred_status)WEXITSTATUS(status);
}

/* A CUDA GPU is the one device that no script of ours can install (and CI has none):
 * suites on cuda:N skip without one, strict or not. */
static inline int probe_optional(const char *backend)
{
	return !strncmp(backend, "cuda", 4);
}

/* For a suite's main: 0 when backend opens here; else prints why and returns the exit
 * status to end with: 77 (skipped) when the backend is not available here (KRED_EBACKEND)
 * in a build configured without strict_tests, 1 otherwise. `bash setup.sh test` installs
 * the devices and configures with -Dstrict_tests=true, so a missing device fails it.
 * A missing CUDA GPU (probe_optional) is a skip in every build, which the suite reports
 * on a "skipped: 1 suite ..." line (counted as skipped, never as passed) and ends with
 * -1: the caller exits 0, so that a strict run passes on a machine without a GPU. */
static inline int probe_or_skip(const char *backend)
{
	char msg[512];
	kred_status st = probe_backend(backend, msg, sizeof(msg));
	int skip;

	if (st == KRED_OK)
		return 0;
	if (st == KRED_EBACKEND && probe_optional(backend)) {
		printf("skipped: 1 suite on %s (no CUDA GPU here: %s)\n", backend, msg);
		return -1;
	}
	skip = st == KRED_EBACKEND && !KRED_TEST_STRICT;
	printf("%s: backend %s: %s\n", skip ? "skipped" : "error", backend, msg);
	return skip ? 77 : 1;
}

/*
 * Runs a suite's tests and returns how many failed, in two runners:
 *   - isolated (may be NULL): each test in a fork of this process, as Check does by
 *     default; for the tests that fork children of their own which open the device;
 *   - together: every test in this one process, one after the other. The table-driven
 *     tests go there: a device platform costs per process what it costs once (POCL loads
 *     its kernel library, about 0.5 s, into each process's first cl_context, and every
 *     kred context on a device shares that cl_context), so a table of 200 rows runs in
 *     a quarter of the time it takes with a process per row.
 * The isolated runner goes first: its forks must come from a process that has not
 * initialised the device yet. CK_FORK=yes in the environment runs both forked, each
 * test apart from the others (for a crash in a table, say).
 */
static inline int run_suites(Suite *isolated, Suite *together)
{
	int failed = 0;
	SRunner *sr;

	if (isolated) {
		sr = srunner_create(isolated);
		srunner_run_all(sr, CK_NORMAL);
		failed += srunner_ntests_failed(sr);
		srunner_free(sr);
	}
	sr = srunner_create(together);
	if (!getenv("CK_FORK"))
		srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed += srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed;
}

#endif
