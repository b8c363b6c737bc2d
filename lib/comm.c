/* Runs spread over several processes through a kred_comm (kred.h): the ring of blocks of
 * the reduced axis, folded into partial states and merged. */
#include <string.h>

#include "internal.h"

kred_status kred_reduction_run_comm(kred_reduction *r, const kred_comm *comm, int64_t nx_local,
				    int64_t ny_local, const void *const *args, void *out,
				    kred_comm_stats *stats)
{
	if (!r)
		return KRED_EINVAL;
	(void)comm, (void)nx_local, (void)ny_local, (void)args, (void)out, (void)stats;
	return kred__ctx_fail(r->ctx, KRED_EUNSUPPORTED, "kred_reduction_run_comm: not yet");
}
