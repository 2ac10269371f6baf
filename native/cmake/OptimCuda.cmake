# The rules that depend on the CUDA compiler's version, in one place (tested without a compiler by
# native/cmake/test_optim_cuda.cmake):
#   - nvcc 11.x accepts gcc only up to 11 as its host compiler, and Debian 12's is gcc 12, so nvcc
#     11.x gets clang++-14 when the user named no host compiler; newer nvcc keeps the default.
#   - CUDA 13 dropped sm_50 to sm_72 (Maxwell, Pascal, Volta). The default architectures are the
#     oldest one the compiler supports from Volta on, then Ampere and Hopper.

# The "X.Y" of "release X.Y" in the text `nvcc --version` prints, or "" when there is none.
function(optim_nvcc_version_from_text text out_var)
  if(text MATCHES "release ([0-9]+)\\.([0-9]+)")
    set(${out_var} "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}" PARENT_SCOPE)
  else()
    set(${out_var} "" PARENT_SCOPE)
  endif()
endfunction()

# TRUE when nvcc of this version needs clang++-14 as its host compiler here.
function(optim_nvcc_needs_clang14 version out_var)
  if(NOT version STREQUAL "" AND version VERSION_LESS 12.0)
    set(${out_var} TRUE PARENT_SCOPE)
  else()
    set(${out_var} FALSE PARENT_SCOPE)
  endif()
endfunction()

# The oldest real architecture nvcc of this version compiles for.
function(optim_cuda_min_arch version out_var)
  if(version VERSION_GREATER_EQUAL 13.0)
    set(${out_var} 75 PARENT_SCOPE)
  elseif(version VERSION_GREATER_EQUAL 12.0)
    set(${out_var} 50 PARENT_SCOPE)
  else()
    set(${out_var} 35 PARENT_SCOPE)
  endif()
endfunction()

# The default OPTIM_CUDA_ARCHS for nvcc of this version.
function(optim_cuda_default_archs version out_var)
  optim_cuda_min_arch("${version}" min_arch)
  if(min_arch GREATER 70)
    set(oldest ${min_arch})
  else()
    set(oldest 70)
  endif()
  set(${out_var} "${oldest};80;90" PARENT_SCOPE)
endfunction()

# Empty when every architecture of `archs` (CMake's CUDA_ARCHITECTURES form: 90, 90-real, 90a ...)
# is supported by nvcc of this version, else a message naming the first that is not.
function(optim_cuda_archs_problem version archs out_var)
  optim_cuda_min_arch("${version}" min_arch)
  set(problem "")
  foreach(arch IN LISTS archs)
    if(arch MATCHES "^([0-9]+)")
      if(CMAKE_MATCH_1 LESS min_arch)
        set(problem "sm_${CMAKE_MATCH_1} is not supported by nvcc ${version} (oldest: sm_${min_arch}); \
set OPTIM_CUDA_ARCHS, e.g. -DOPTIM_CUDA_ARCHS=\"${min_arch};80;90\"")
        break()
      endif()
    else()
      set(problem "'${arch}' in OPTIM_CUDA_ARCHS is not an architecture number")
      break()
    endif()
  endforeach()
  set(${out_var} "${problem}" PARENT_SCOPE)
endfunction()

# Before check_language(CUDA): the version of the nvcc CMake will pick (CMAKE_CUDA_COMPILER, then
# $CUDACXX, then nvcc on PATH), "" when there is none or it cannot tell.
function(optim_probe_nvcc_version out_var)
  if(CMAKE_CUDA_COMPILER)
    set(nvcc "${CMAKE_CUDA_COMPILER}")
  elseif(DEFINED ENV{CUDACXX})
    set(nvcc "$ENV{CUDACXX}")
  else()
    find_program(OPTIM_NVCC nvcc)
    set(nvcc "${OPTIM_NVCC}")
  endif()
  set(version "")
  if(nvcc)
    execute_process(COMMAND "${nvcc}" --version OUTPUT_VARIABLE text ERROR_QUIET
                    RESULT_VARIABLE rc)
    if(rc EQUAL 0)
      optim_nvcc_version_from_text("${text}" version)
    endif()
  endif()
  set(${out_var} "${version}" PARENT_SCOPE)
endfunction()
