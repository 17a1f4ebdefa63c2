# The CUDA backend (sm_90a), included at the end of native/CMakeLists.txt. Three cases:
#  - no CUDA compiler: nothing (the CPU addon alone);
#  - nvcc but no cuBLASLt headers (CPU machines, CI): the kernel files compile into an object
#    library that nothing links (a compile check; the addon is unchanged);
#  - nvcc and cuBLASLt (the GPU host): the full backend goes into microserve_native with
#    MS_WITH_CUDA, and the targets microserve_engine_bench and microserve_kernels_check exist.
# Options: -DMS_CUDA=OFF skips all of it; -DMS_CUDA_ARCH (default 90a = sm_90a machine code, which
# the wgmma prefill attention needs; any other value is passed as CUDA_ARCHITECTURES and leaves
# prefill attention on the mma.sync kernel).
option(MS_CUDA "Build CUDA parts where a CUDA toolchain exists" ON)
if(NOT MS_CUDA)
  return()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(STATUS "microserve: no CUDA compiler found, CPU backend only")
  return()
endif()
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)  # one runtime for the .cu and .cc files
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(MS_CUDA_ARCH "90a" CACHE STRING "CUDA targets' architecture: 90a, or a CUDA_ARCHITECTURES value")
if(MS_CUDA_ARCH STREQUAL "90-real")  # the default before 2026-12-04, kept in older build folders' caches
  message(STATUS "microserve: MS_CUDA_ARCH 90-real (a build folder's old default) -> 90a")
  set(MS_CUDA_ARCH "90a" CACHE STRING "CUDA targets' architecture: 90a, or a CUDA_ARCHITECTURES value" FORCE)
endif()

set(MS_CUDA_KERNEL_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/elementwise.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/skinny-gemm.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/attention-decode.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/attention-decode-mma.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/attention-prefill.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/attention-prefill-wgmma.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/sampling.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/logit-processing.cu)

# sm_90a (architecture-specific: wgmma) is named by flags, since CMake before 3.27 does not take
# "90a" in CUDA_ARCHITECTURES; MS_CUDA_WGMMA tells the host code the wgmma kernel is there.
function(ms_cuda_target_options target)
  set_target_properties(${target} PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON)
  if(MS_CUDA_ARCH STREQUAL "90a")
    set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES OFF)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--generate-code=arch=compute_90a,code=sm_90a>)
    target_compile_definitions(${target} PRIVATE MS_CUDA_WGMMA)
  else()
    set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES ${MS_CUDA_ARCH})
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo>)
endfunction()

set(MS_CUBLASLT_INCLUDE_DIR "")
foreach(dir ${CUDAToolkit_INCLUDE_DIRS})
  if(EXISTS "${dir}/cublasLt.h")
    set(MS_CUBLASLT_INCLUDE_DIR "${dir}")
  endif()
endforeach()
# Losing kernel variants with their reference checks and timing loops (bench/kernels, llm.c's
# dev/cuda style): executables outside the addon, built only on request
# (`cmake --build native/build --target microserve_kernel_benches`); they need nvcc and cudart only.
add_library(microserve_kernel_objs OBJECT EXCLUDE_FROM_ALL ${MS_CUDA_KERNEL_SOURCES})
ms_cuda_target_options(microserve_kernel_objs)
target_include_directories(microserve_kernel_objs PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_link_libraries(microserve_kernel_objs PRIVATE CUDA::cudart)
add_custom_target(microserve_kernel_benches)
foreach(name decode-attention-simt prefill-attention-fa2 decode-merge-serial decode-kv-read prefill-attention-wgmma
             gemm-swiglu-wgmma gemm-decode-wgmma icache-cold)
  add_executable(${name} EXCLUDE_FROM_ALL ${CMAKE_CURRENT_SOURCE_DIR}/../bench/kernels/${name}.cu
                                          $<TARGET_OBJECTS:microserve_kernel_objs>)
  ms_cuda_target_options(${name})
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(${name} PRIVATE CUDA::cudart)
  add_dependencies(microserve_kernel_benches ${name})
endforeach()
if(TARGET CUDA::cublasLt)  # gemm-swiglu-wgmma times cuBLASLt's product where it can link it
  target_link_libraries(gemm-swiglu-wgmma PRIVATE CUDA::cublasLt)
endif()
if(TARGET CUDA::cublasLt AND MS_CUBLASLT_INCLUDE_DIR)  # gemm-decode-wgmma: against the engine's cuBLASLt choice
  target_sources(gemm-decode-wgmma PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/gemm.cc)
  target_compile_definitions(gemm-decode-wgmma PRIVATE MS_BENCH_GEMM)
  target_link_libraries(gemm-decode-wgmma PRIVATE CUDA::cublasLt)
endif()

if(NOT MS_CUBLASLT_INCLUDE_DIR OR NOT TARGET CUDA::cublasLt)
  message(STATUS "microserve: nvcc ${CMAKE_CUDA_COMPILER_VERSION} without cuBLASLt: compile check of the CUDA kernels only")
  add_library(microserve_cuda_kernels OBJECT ${MS_CUDA_KERNEL_SOURCES})
  ms_cuda_target_options(microserve_cuda_kernels)
  target_link_libraries(microserve_cuda_kernels PRIVATE CUDA::cudart)
  return()
endif()

message(STATUS "microserve: CUDA backend (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, cuBLASLt in ${MS_CUBLASLT_INCLUDE_DIR})")
add_library(microserve_cuda STATIC
  ${MS_CUDA_KERNEL_SOURCES}
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/gemm.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/weights.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/forward-plan.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/extras-pack.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/cuda-backend.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/kv-ipc.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/kv-nvshmem.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/model-forward.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/autotune.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/attention-tune.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/memory-plan.cc)
ms_cuda_target_options(microserve_cuda)
target_compile_options(microserve_cuda PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-O2>)
target_include_directories(microserve_cuda PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_link_libraries(microserve_cuda PUBLIC CUDA::cudart CUDA::cublasLt)

# NVSHMEM (host library only) where it exists: $NVSHMEM_HOME, else the pip wheel
# nvidia-nvshmem-cu13 of python3. Without it the NVSHMEM entry points answer NO_DEVICE.
set(MS_NVSHMEM_HOME "$ENV{NVSHMEM_HOME}")
if(NOT MS_NVSHMEM_HOME)
  execute_process(COMMAND python3 -c "import nvidia.nvshmem as m; print(list(m.__path__)[0])"
                  OUTPUT_VARIABLE MS_NVSHMEM_HOME OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
if(MS_NVSHMEM_HOME AND EXISTS "${MS_NVSHMEM_HOME}/include/nvshmemx.h" AND EXISTS "${MS_NVSHMEM_HOME}/lib/libnvshmem_host.so.3")
  message(STATUS "microserve: NVSHMEM in ${MS_NVSHMEM_HOME}")
  target_include_directories(microserve_cuda PRIVATE "${MS_NVSHMEM_HOME}/include")
  target_compile_definitions(microserve_cuda PRIVATE MS_WITH_NVSHMEM)
  target_link_libraries(microserve_cuda PUBLIC "${MS_NVSHMEM_HOME}/lib/libnvshmem_host.so.3")
  set(MS_EXTRA_RPATH "${MS_NVSHMEM_HOME}/lib")
else()
  message(STATUS "microserve: no NVSHMEM found (transport nvshmem unavailable)")
  set(MS_EXTRA_RPATH "")
endif()

target_link_libraries(microserve_native PRIVATE microserve_cuda)
target_compile_definitions(microserve_native PRIVATE MS_WITH_CUDA)
set_target_properties(microserve_native PROPERTIES BUILD_RPATH "${CUDAToolkit_LIBRARY_DIR};${MS_EXTRA_RPATH}")

# Built on request (not by `npm run build:native`): bench/gpu/run.sh builds them.
add_executable(microserve_engine_bench EXCLUDE_FROM_ALL ${CMAKE_CURRENT_SOURCE_DIR}/../bench/gpu/engine-bench.cu)
ms_cuda_target_options(microserve_engine_bench)
target_link_libraries(microserve_engine_bench PRIVATE microserve_cuda)
add_executable(microserve_kernels_check EXCLUDE_FROM_ALL ${CMAKE_CURRENT_SOURCE_DIR}/../test/cuda/kernels-check.cu
                                                        ${CMAKE_CURRENT_SOURCE_DIR}/../test/cuda/extras-check.cu)
ms_cuda_target_options(microserve_kernels_check)
target_link_libraries(microserve_kernels_check PRIVATE microserve_cuda)
set_target_properties(microserve_engine_bench microserve_kernels_check PROPERTIES BUILD_RPATH "${MS_EXTRA_RPATH}")
