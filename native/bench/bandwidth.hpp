// The bandwidth reference's passes (bandwidth.cpp), on arguments stream_reference.cpp validated.
#pragma once

#include <optim_bench.h>

namespace optim::bench {
void stream_reference_f32(const optim_stream_tensors& tensors, double scale, double* sum);
void stream_reference_f64(const optim_stream_tensors& tensors, double scale, double* sum);
} // namespace optim::bench
