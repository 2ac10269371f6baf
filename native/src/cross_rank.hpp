// The steps' across_ranks reductions (optim_grad_clip.across_ranks, optim_hd_params.across_ranks):
// a few doubles summed over every rank of the MPI job, identical on every rank.
#pragma once

#include <cstdint>

namespace optim {

// Sums `count` doubles over every rank in place (the MPI plugin's rank-ordered scalar reduction).
// Fails with an optim::Error, naming fn, when the job has no MPI or a rank does not answer in time.
void sum_across_ranks(const char* fn, double* values, int64_t count);

} // namespace optim
