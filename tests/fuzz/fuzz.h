/* What the fuzz harnesses of tests/fuzz share (fuzz_lib.c): the libFuzzer entry points, a
 * check that aborts with a message (a crash to libFuzzer, a failure to the replay test),
 * and what the formula and kernel harnesses do with a reduction once it is made. */
#ifndef KRED_FUZZ_H
#define KRED_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kred.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where failed checks are reported: a copy of stderr taken before libFuzzer's
 * -close_fd_mask=2 silences the code under test (fz_log_init, from each harness's
 * LLVMFuzzerInitialize). */
extern FILE *fz_log;
void fz_log_init(void);

#define FZ_CHECK(cond, ...)                                                           \
	do {                                                                          \
		if (!(cond)) {                                                        \
			FILE *log_ = fz_log ? fz_log : stderr;                        \
			fprintf(log_, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                               \
			fprintf(log_, __VA_ARGS__);                                   \
			fputc('\n', log_);                                            \
			fflush(log_);                                                 \
			abort();                                                      \
		}                                                                     \
	} while (0)

/* The input as a NUL-terminated copy (embedded NULs end the text early, as they would
 * for any C string the library is given). NULL when out of memory. Caller frees. */
char *fz_text(const uint8_t *data, size_t size);

/* Values per buffer beyond which fz_run skips a run: dimensions reach 65,536 and KMin's
 * K 1,024, and the harnesses are here for crashes, not for long runs. */
#define FZ_MAX_VALUES (1 << 16)

/* n deterministic values of dtype at p, from a pattern with zeros, negatives and ties. */
void fz_fill(void *p, size_t n, kred_dtype dtype, unsigned seed);
/* Runs r on nx x ny rows with every argument filled in; a run may only fail for memory.
 * Returns its status (KRED_OK for a run skipped as too large). */
kred_status fz_run(kred_reduction *r, int64_t nx, int64_t ny);
/* parse(print(f)) prints f: r's canonical text, given back as the formula (and weight)
 * of spec, with spec's aliases and reduction, makes a reduction that prints the same. */
void fz_round_trip(kred_reduction *r, const kred_spec *spec);
/* The same for a reduction the library made (a gradient): its aliases are rebuilt from
 * the names of its graph and its argument table (read inside the reduction: the public
 * table gives one name a position, and hides the argument an auxiliary reduction
 * fills), and it is parsed as a Sum (one with a weight is left out). */
void fz_round_trip_args(kred_reduction *r);

#endif
