/* The reporting of the MPI suites (test_mpi_glue.c, test_mpi.c): plain programs under
 * mpirun, since Check's forks do not mix with MPI. Each rank checks its own part; a
 * section passes when every rank's checks did, and rank 0 prints one line per section
 * and, last, a line in Check's format, which tools/test_summary.py adds up with the other
 * suites. Every rank exits with the same status. */
#ifndef KRED_TEST_MPI_CHECK_H
#define KRED_TEST_MPI_CHECK_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

static int mc_rank, mc_size, mc_fails, mc_sections, mc_sections_failed;

/* A failed check prints at once, from the rank that saw it, and the section goes on. */
#define MCHECK(cond, ...)                                                                \
	do {                                                                             \
		if (!(cond)) {                                                           \
			mc_fails++;                                                      \
			printf("rank %d: %s:%d: check failed: %s: ", mc_rank, __FILE__, \
			       __LINE__, #cond);                                         \
			printf(__VA_ARGS__);                                             \
			printf("\n");                                                    \
			fflush(stdout);                                                  \
		}                                                                        \
	} while (0)

/* A rank stuck in a collective would leave mpirun waiting until meson's timeout, with
 * nothing said: an alarm names the rank and what it was doing, and its exit makes mpirun
 * end the others. */
static const char *mc_doing = "starting";

static void mc_on_alarm(int sig)
{
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "rank %d: FAIL: no answer after the time limit, in %s "
				"(a rank left waiting?)\n", mc_rank, mc_doing);

	(void)sig;
	if (write(STDOUT_FILENO, msg, (size_t)(n > 0 && n < (int)sizeof(msg) ? n : 0)) < 0)
		_exit(3);
	_exit(3);
}

/* Arms (or rearms) the alarm for the next step. */
static void mc_step(const char *doing, unsigned seconds)
{
	mc_doing = doing;
	alarm(seconds);
}

static void mc_init(int *argc, char ***argv)
{
	MPI_Init(argc, argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &mc_rank);
	MPI_Comm_size(MPI_COMM_WORLD, &mc_size);
	signal(SIGALRM, mc_on_alarm);
	setvbuf(stdout, NULL, _IOLBF, 0);
}

static void mc_section_begin(void)
{
	mc_fails = 0;
}

/* Ends a section: collective. Returns whether it passed on every rank. */
static int mc_section_end(const char *name)
{
	int all = 0;

	MPI_Allreduce(&mc_fails, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	mc_sections++;
	if (all)
		mc_sections_failed++;
	if (mc_rank == 0)
		printf("%s: %s%s\n", all ? "FAIL" : "PASS", name,
		       all ? " (see the failed checks above)" : "");
	return !all;
}

/* Prints the totals and finalises MPI; the exit status of every rank. */
static int mc_finish(const char *suite)
{
	alarm(0);
	if (mc_rank == 0)
		printf("%s: %d ranks; Checks: %d, Failures: %d, Errors: 0\n", suite, mc_size,
		       mc_sections, mc_sections_failed);
	MPI_Finalize();
	return mc_sections_failed ? 1 : 0;
}

#endif
