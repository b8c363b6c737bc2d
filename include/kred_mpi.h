/* kred_mpi: kred reductions over the ranks of an MPI communicator (libkred_mpi).
 *
 * A reduction whose points are spread over several processes, each holding a slice:
 *
 *	kred_mpi_run(r, MPI_COMM_WORLD, nx_local, ny_local, args, out);
 *
 * is kred_reduction_run_comm (kred.h) with a kred_comm made of MPI calls. What each rank
 * passes and gets:
 *
 *   - its own context and reduction: every rank creates the same reduction (same formula,
 *     aliases, reduction, axis and dtype) in a context of its own, on any backend: a rank
 *     on a GPU and a rank on the host CPU may run together;
 *   - nx_local and ny_local: how many rows of the i variables and of the j variables it
 *     holds. Slices may be uneven, and empty (0). The whole data is the ranks' slices put
 *     end to end in rank order: rank 0's rows first;
 *   - args: as for kred_reduction_run with (nx_local, ny_local): its slice of every Vi
 *     argument (nx_local x dim) and Vj argument (ny_local x dim), and every parameter (Pm)
 *     whole, the same values on every rank;
 *   - out: its own rows of the result, reduced over the data of all ranks: nx_local rows
 *     for a reduction over j (KRED_REDUCE_J), ny_local rows for one over i. Indices
 *     (ArgMin, ArgKMin...) count the reduced axis across ranks: rank 0's rows first. The
 *     gradient with respect to a Pm variable (kred_reduction_grad) is summed over every
 *     rank's rows, and every rank gets the whole vector.
 *
 * Every rank of the communicator must call, with the same reduction. If one rank fails
 * (a NULL argument, a kernel that does not build, a device error), every rank returns an
 * error instead of waiting: the failing one its own status (the reason in
 * kred_errmsg), the others KRED_EDEVICE. A rank whose context or reduction could not be
 * made may call with r = NULL for that purpose: every rank then returns an error (that
 * rank KRED_EINVAL; the others KRED_EDEVICE, with nothing recorded in their kred_errmsg).
 *
 * MPI must be initialised by the caller; every MPI call is made from the calling thread,
 * so MPI_Init (MPI_THREAD_SINGLE) is enough. kred's messages travel on a duplicate of
 * comm (MPI_Comm_dup) made for the call and freed before it returns, so they never mix
 * with the caller's; the duplicate returns MPI errors (MPI_ERRORS_RETURN) rather than
 * aborting, and they come back as KRED_EDEVICE. Link with pkg-config's kred-mpi.
 */
#ifndef KRED_MPI_H
#define KRED_MPI_H

#include <mpi.h>

#include "kred.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KRED_MPI_BUILDING) && defined(__GNUC__)
#define KRED_MPI_API __attribute__((visibility("default")))
#else
#define KRED_MPI_API
#endif

/* Runs r over the ranks of comm: see above. Collective over comm. */
KRED_MPI_API kred_status kred_mpi_run(kred_reduction *r, MPI_Comm comm, int64_t nx_local,
				      int64_t ny_local, const void *const *args, void *out);

/* kred_mpi_run, and what the run measured (kred_comm_stats: seconds in all, computing,
 * and waiting for the exchanges that computation did not hide; this rank's bytes sent).
 * stats may be NULL. */
KRED_MPI_API kred_status kred_mpi_run_stats(kred_reduction *r, MPI_Comm comm, int64_t nx_local,
					    int64_t ny_local, const void *const *args, void *out,
					    kred_comm_stats *stats);

/* The kred_comm itself, for a caller that calls kred_reduction_run_comm directly, or runs
 * many reductions on one duplicate of comm: kred_mpi_comm_init duplicates comm (collective)
 * and fills *c; kred_mpi_comm_free frees the duplicate (collective; c may be zeroed or
 * already freed). kred_mpi_comm_init returns KRED_EINVAL for MPI_COMM_NULL or before
 * MPI_Init, KRED_ENOMEM, or KRED_EDEVICE when MPI fails; *c is then zeroed. */
KRED_MPI_API kred_status kred_mpi_comm_init(kred_comm *c, MPI_Comm comm);
KRED_MPI_API void kred_mpi_comm_free(kred_comm *c);

#ifdef __cplusplus
}
#endif
#endif /* KRED_MPI_H */
