/* Runs a fuzz harness without libFuzzer, on every file of the corpus folders (or the
 * files) it is given: what the regular test suites do with tests/fuzz/corpus, so that
 * each committed input, and the checks the harness makes on it (such as the printer and
 * the parser agreeing), runs in every build. A failed check aborts. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fuzz.h"

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	size_t len = 0, cap = 0, n;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	do {
		if (len == cap) {
			uint8_t *p = realloc(data, cap = cap ? 2 * cap : 4096);

			if (!p) {
				fprintf(stderr, "replay: %s: out of memory\n", path);
				free(data);
				fclose(f);
				return -1;
			}
			data = p;
		}
		n = fread(data + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	/* libFuzzer hands over exactly len bytes: so does this, for ASan to see overreads */
	{
		uint8_t *exact = malloc(len ? len : 1);

		if (!exact) {
			free(data);
			return -1;
		}
		memcpy(exact, data, len);
		free(data);
		if (getenv("KRED_REPLAY_VERBOSE"))
			fprintf(stderr, "replay: %s\n", path);
		LLVMFuzzerTestOneInput(exact, len);
		free(exact);
	}
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir, in name order. Returns the count, or -1. */
static long replay_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	long done = 0;

	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **p = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));

			if (!p)
				break;
			names = p;
		}
		names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
		if (!names[n])
			break;
		sprintf(names[n], "%s/%s", dir, e->d_name);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);
	for (size_t k = 0; k < n; k++) {
		struct stat st;

		if (stat(names[k], &st) == 0 && S_ISREG(st.st_mode)) {
			if (replay_file(names[k]) != 0)
				done = -1;
			else if (done >= 0)
				done++;
		}
		free(names[k]);
	}
	free(names);
	return done;
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	long total = 0;
	int rc = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	LLVMFuzzerInitialize(&argc, &argv);
	for (int k = 1; k < argc; k++) {
		struct stat st;
		long n;

		if (stat(argv[k], &st) != 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[k], strerror(errno));
			rc = 1;
			continue;
		}
		n = S_ISDIR(st.st_mode) ? replay_dir(argv[k]) : replay_file(argv[k]) == 0 ? 1 : -1;
		if (n < 0)
			rc = 1;
		else
			total += n;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* an empty or missing corpus must not pass as a replayed one */
	if (total == 0) {
		fprintf(stderr, "replay: no inputs found\n");
		rc = 1;
	}
	printf("replayed %ld inputs in %.2f s\n", total,
	       (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
	return rc;
}
