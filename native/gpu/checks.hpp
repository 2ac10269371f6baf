// The CUDA-vs-CPU checks of optim_gpu_check (checks.cpp).
#pragma once

#include "report.hpp"

namespace optim_gpu {

struct CheckOptions {
    bool quick = false; // smaller tensors, fewer steps and evaluations (for the sanitizers)
};

// Runs every suite into `report`; returns 0 when every case passed, else 1.
int run_checks(const CheckOptions& options, Report& report);

} // namespace optim_gpu
