# The version rules of OptimCuda.cmake for nvcc 11.8 (Debian 12) and 12.x/13.x (the GPU machines),
# checked without any CUDA compiler: cmake -P native/cmake/test_optim_cuda.cmake
include("${CMAKE_CURRENT_LIST_DIR}/OptimCuda.cmake")

set(failures 0)
macro(expect what actual expected)
  if(NOT "${actual}" STREQUAL "${expected}")
    message(SEND_ERROR "${what}: got '${actual}', expected '${expected}'")
    math(EXPR failures "${failures} + 1")
  endif()
endmacro()

# What nvcc --version prints (last lines), from Debian's 11.8 and from a CUDA 13 install.
set(nvcc_11_8 "nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2022 NVIDIA Corporation
Built on Wed_Sep_21_10:33:58_PDT_2022
Cuda compilation tools, release 11.8, V11.8.89
Build cuda_11.8.r11.8/compiler.31833905_0")
set(nvcc_13_0 "nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Cuda compilation tools, release 13.0, V13.0.48
Build cuda_13.0.r13.0/compiler.36260728_0")

optim_nvcc_version_from_text("${nvcc_11_8}" v)
expect("version of nvcc 11.8" "${v}" "11.8")
optim_nvcc_version_from_text("${nvcc_13_0}" v)
expect("version of nvcc 13.0" "${v}" "13.0")
optim_nvcc_version_from_text("command not found" v)
expect("version of no nvcc" "${v}" "")

optim_nvcc_needs_clang14("11.8" c)
expect("clang for 11.8" "${c}" "TRUE")
optim_nvcc_needs_clang14("12.4" c)
expect("clang for 12.4" "${c}" "FALSE")
optim_nvcc_needs_clang14("13.0" c)
expect("clang for 13.0" "${c}" "FALSE")
optim_nvcc_needs_clang14("" c)
expect("clang for an unknown version" "${c}" "FALSE")

optim_cuda_default_archs("11.8" a)
expect("default archs 11.8" "${a}" "70;80;90")
optim_cuda_default_archs("12.9" a)
expect("default archs 12.9" "${a}" "70;80;90")
optim_cuda_default_archs("13.0" a)
expect("default archs 13.0" "${a}" "75;80;90")
optim_cuda_default_archs("13.2" a)
expect("default archs 13.2" "${a}" "75;80;90")

foreach(version 11.8 12.9 13.0)
  optim_cuda_default_archs("${version}" a)
  optim_cuda_archs_problem("${version}" "${a}" p)
  expect("defaults of ${version} are accepted" "${p}" "")
endforeach()
optim_cuda_archs_problem("13.0" "90" p)
expect("sm_90 alone on 13.0" "${p}" "")
optim_cuda_archs_problem("13.0" "90a-real" p)
expect("90a-real on 13.0" "${p}" "")
optim_cuda_archs_problem("13.0" "70;80;90" p)
if(NOT p MATCHES "sm_70 is not supported by nvcc 13.0")
  message(SEND_ERROR "sm_70 on 13.0 must be refused, got '${p}'")
  math(EXPR failures "${failures} + 1")
endif()
optim_cuda_archs_problem("11.8" "native" p)
if(NOT p MATCHES "not an architecture number")
  message(SEND_ERROR "'native' must be refused, got '${p}'")
  math(EXPR failures "${failures} + 1")
endif()

if(failures GREATER 0)
  message(FATAL_ERROR "${failures} expectation(s) failed")
endif()
message(STATUS "OptimCuda.cmake: every expectation met")
