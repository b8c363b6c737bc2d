/* Reading and writing NumPy .npy files (format versions 1 and 2, C order, float32 and
 * float64), for the kred command and the tests. */
#ifndef KRED_NPY_H
#define KRED_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kred.h"

#define NPY_MAX_DIMS 8

struct npy_array {
	kred_dtype dtype;
	int ndim;
	int64_t shape[NPY_MAX_DIMS];
	size_t count; /* product of the shape */
	void *data;   /* count values of dtype, little-endian host order */
};

/* Reads path. On failure returns -1 and writes a message naming the file and what is
 * wrong (not .npy, Fortran order, unsupported dtype, truncated...) into err. */
int npy_read(const char *path, struct npy_array *a, char *err, size_t errlen);
/* The same from a stream open for reading, from where it stands to its end (which must
 * be the end of the array); path only names it in messages. The stream stays open. When
 * its size cannot be known (a pipe, a stream in memory), memory grows with the data that
 * arrives, never past twice what the stream holds. */
int npy_read_stream(FILE *f, const char *path, struct npy_array *a, char *err, size_t errlen);
/* Writes an array of count = prod(shape) values. Returns -1 with a message on failure
 * (and then leaves no file). */
int npy_write(const char *path, kred_dtype dtype, int ndim, const int64_t *shape,
	      const void *data, char *err, size_t errlen);
/* The same to a stream, flushed and left open; path only names it in messages. */
int npy_write_stream(FILE *f, const char *path, kred_dtype dtype, int ndim,
		     const int64_t *shape, const void *data, char *err, size_t errlen);
void npy_free(struct npy_array *a);

#endif
