// Engine benchmark of the CUDA backend on the llama-3.1-8b preset shape (random weights), in one
// run: rooflines (read-only bandwidth, device copy, bf16 GEMM 8192^3), decode step time at batch
// 1/8/32/64/128 with 1k-token contexts (graph replay; GPU time from events; host time = wall -
// GPU; with logits to the host and with tokens sampled on the GPU), eager decode and prefill with a per-stage profile, and prefill tok/s at 512/1k/4k/8k tokens.
// Usage: microserve_engine_bench [--quick] [--json FILE] [--ctx N] [--batches A,B,..] [--prompts A,B,..]
//        [--no-variants]   (--ctx/--batches/--prompts: the serving bound's inputs, bench/gpu/serve-bound.sh)
//        [--choices-out FILE] [--choices FILE]  write this run's start-time choices (GEMM, attention
//                          plans); apply another run's after this one's tuning (bench/gpu/profile.sh)
//        [--profile]       one eager decode step per batch and one prefill per prompt length between
//                          cudaProfilerStart/Stop, nothing else: for `ncu --profile-from-start off`
//                          (bench/gpu/profile.sh)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cuda_profiler_api.h>

#include "bench-backend.h"
#include "cuda/check.h"
#include "cuda/cuda-backend.h"
#include "cuda/gemm.h"
#include "cuda/kernels.h"

using namespace ms::cuda;
using Clock = std::chrono::steady_clock;

namespace {

// --profile: the last iteration of decode() and prefill() runs between cudaProfilerStart/Stop.
bool g_profileLast = false;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Sums the buffer with 16-byte loads; the (never true) store keeps the loads alive.
__global__ void readKernel(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint4 v = p[i];
    acc ^= v.x + v.y + v.z + v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

template <class F>
double timeMs(F&& fn, int warm, int reps, cudaStream_t s) {
  cudaEvent_t a, b;
  MS_CUDA_CHECK(cudaEventCreate(&a));
  MS_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warm; i++) fn();
  std::vector<double> t;
  for (int i = 0; i < reps; i++) {
    MS_CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    MS_CUDA_CHECK(cudaEventRecord(b, s));
    MS_CUDA_CHECK(cudaEventSynchronize(b));
    float ms;
    MS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(t);
}

struct Rooflines {
  double readTBs = 0, copyTBs = 0, gemmTflops = 0;
};

Rooflines measureRooflines() {
  Rooflines r;
  cudaStream_t s;
  MS_CUDA_CHECK(cudaStreamCreate(&s));
  int sms;
  MS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t bytes = size_t(8) << 30;
  bf16* buf;
  unsigned* sink;
  MS_CUDA_CHECK(cudaMalloc(&buf, bytes));
  MS_CUDA_CHECK(cudaMalloc(&sink, 4));
  randomNormalBf16(buf, bytes / 2, 3, 0, 0.f, 1.f, s);
  double ms = timeMs([&] { readKernel<<<sms * 8, 512, 0, s>>>(reinterpret_cast<uint4*>(buf), bytes / 16, sink); }, 2, 10, s);
  MS_LAUNCH_CHECK("readKernel");
  r.readTBs = bytes / (ms * 1e-3) / 1e12;
  const size_t half = bytes / 2;
  ms = timeMs([&] { MS_CUDA_CHECK(cudaMemcpyAsync(buf, reinterpret_cast<char*>(buf) + half, half, cudaMemcpyDeviceToDevice, s)); }, 2, 10, s);
  r.copyTBs = 2.0 * half / (ms * 1e-3) / 1e12;  // bytes read + written
  {
    const int n = 8192;
    bf16* x = buf;
    bf16* w = buf + size_t(n) * n;
    bf16* y = buf + size_t(2) * n * n;
    Gemm g;
    ms = timeMs([&] { g.run(x, n, w, n, n, y, OutMode::Bf16, s); }, 3, 10, s);
    r.gemmTflops = 2.0 * n * n * double(n) / (ms * 1e-3) / 1e12;
  }
  MS_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaFree(buf);
  cudaFree(sink);
  cudaStreamDestroy(s);
  return r;
}

ms::ModelConfig llama8b() {
  ms::ModelConfig m;
  m.vocab = 128256, m.hidden = 4096, m.intermediate = 14336, m.layers = 32, m.heads = 32, m.kvHeads = 8;
  m.headDim = 128, m.rmsEps = 1e-5f, m.ropeTheta = 500000.f, m.llama3Scaling = true;
  m.ropeFactor = 8.f, m.lowFreqFactor = 1.f, m.highFreqFactor = 4.f, m.originalMaxPositions = 8192;
  m.tiedEmbeddings = false;
  return m;
}

void ok(const ms::Status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, st.message.c_str());
    std::exit(1);
  }
}

struct StepTimes {
  double wallMs, gpuMs;
};

// What a decode step returns: f32 logits of every sequence (copied to the host), or tokens
// sampled on the GPU (greedy, or temperature 0.8 with top-p 0.9), numSeqs int32 to the host.
enum class StepOut { Logits, Greedy, Sampled };

// Decode steps of `batch` sequences whose context is ctx tokens (KV already in the pages).
StepTimes decode(BenchCudaBackend& b, int batch, int ctx, int pageSize, int reps, std::mt19937& rng,
                 StepOut outKind = StepOut::Logits) {
  const int pagesPerSeq = (ctx + pageSize) / pageSize;
  std::vector<int32_t> tokens(batch), seqLens(batch, 1), startPos(batch, ctx - 1), tables(size_t(batch) * pagesPerSeq);
  for (size_t i = 0; i < tables.size(); i++) tables[i] = int32_t(i);
  std::vector<float> logits(outKind == StepOut::Logits ? size_t(batch) * 128256 : 0);
  std::vector<float> temperature(batch, outKind == StepOut::Sampled ? 0.8f : 0.f), topP(batch, 0.9f);
  std::vector<uint32_t> seed(batch), step(batch, 0);
  std::vector<int32_t> sampled(batch);
  for (int s = 0; s < batch; s++) seed[s] = uint32_t(s);
  ms::Batch bt;
  bt.tokens = tokens.data(), bt.numTokens = batch, bt.numSeqs = batch, bt.seqLens = seqLens.data();
  bt.startPos = startPos.data(), bt.pageTables = tables.data(), bt.maxPagesPerSeq = pagesPerSeq;
  if (outKind != StepOut::Logits) {
    bt.temperature = temperature.data(), bt.topP = topP.data(), bt.seed = seed.data(), bt.step = step.data();
    bt.tokensOut = sampled.data();
  }
  std::vector<double> wall, gpu;
  for (int i = 0; i < reps + 3; i++) {
    for (auto& t : tokens) t = int32_t(rng() % 128256);
    for (auto& k : step) k = uint32_t(i);
    const bool prof = g_profileLast && i == reps + 2;
    if (prof) MS_CUDA_CHECK(cudaProfilerStart());
    auto t0 = Clock::now();
    ok(b.forward(bt, outKind == StepOut::Logits ? logits.data() : nullptr), "decode forward");
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (prof) MS_CUDA_CHECK(cudaProfilerStop());
    if (i >= 3) wall.push_back(ms), gpu.push_back(b.lastGpuMs());
  }
  return {median(wall), median(gpu)};
}

StepTimes prefill(BenchCudaBackend& b, int len, int pageSize, int reps, std::mt19937& rng) {
  std::vector<int32_t> tokens(len), seqLens(1, len), startPos(1, 0), table((len + pageSize - 1) / pageSize);
  for (size_t i = 0; i < table.size(); i++) table[i] = int32_t(i);
  std::vector<float> logits(128256);
  ms::Batch bt;
  bt.tokens = tokens.data(), bt.numTokens = len, bt.numSeqs = 1, bt.seqLens = seqLens.data();
  bt.startPos = startPos.data(), bt.pageTables = table.data(), bt.maxPagesPerSeq = int(table.size());
  std::vector<double> wall, gpu;
  for (int i = 0; i < reps + 1; i++) {
    for (auto& t : tokens) t = int32_t(rng() % 128256);
    const bool prof = g_profileLast && i == reps;
    if (prof) MS_CUDA_CHECK(cudaProfilerStart());
    auto t0 = Clock::now();
    ok(b.forward(bt, logits.data()), "prefill forward");
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (prof) MS_CUDA_CHECK(cudaProfilerStop());
    if (i >= 1) wall.push_back(ms), gpu.push_back(b.lastGpuMs());
  }
  return {median(wall), median(gpu)};
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, variantsOn = true, profileOnly = false;
  const char* jsonPath = nullptr;
  const char* choicesOut = nullptr;  // --choices-out: this run's start-time choices (for --choices)
  const char* choicesIn = nullptr;   // --choices: another run's, applied after this one's tuning
  int ctxArg = 0;
  std::vector<int> batchesArg, promptsArg;
  auto intList = [](const char* s) {
    std::vector<int> v;
    for (const char* p = s; *p;) {
      char* end;
      long x = std::strtol(p, &end, 10);
      if (end == p || x < 1) throw std::runtime_error(std::string("bad integer list: ") + s);
      v.push_back(int(x));
      p = *end == ',' ? end + 1 : end;
      if (*end && *end != ',') throw std::runtime_error(std::string("bad integer list: ") + s);
    }
    return v;
  };
  try {
    for (int i = 1; i < argc; i++) {
      if (!std::strcmp(argv[i], "--quick")) quick = true;
      else if (!std::strcmp(argv[i], "--no-variants")) variantsOn = false;
      else if (!std::strcmp(argv[i], "--profile")) profileOnly = true;
      else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) jsonPath = argv[++i];
      else if (!std::strcmp(argv[i], "--choices-out") && i + 1 < argc) choicesOut = argv[++i];
      else if (!std::strcmp(argv[i], "--choices") && i + 1 < argc) choicesIn = argv[++i];
      else if (!std::strcmp(argv[i], "--ctx") && i + 1 < argc) ctxArg = intList(argv[++i]).at(0);
      else if (!std::strcmp(argv[i], "--batches") && i + 1 < argc) batchesArg = intList(argv[++i]);
      else if (!std::strcmp(argv[i], "--prompts") && i + 1 < argc) promptsArg = intList(argv[++i]);
      else throw std::runtime_error(std::string("unknown argument: ") + argv[i]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  try {
    cudaDeviceProp prop;
    MS_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    char date[32];
    std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    std::printf("device: %s, %d SMs, %.1f GiB; %s\n", prop.name, prop.multiProcessorCount,
                prop.totalGlobalMem / 1073741824.0, date);
    Rooflines r = profileOnly ? Rooflines{} : measureRooflines();
    std::printf("roofline: read-only %.3f TB/s; device copy %.3f TB/s (read+written); bf16 GEMM 8192^3 %.0f TFLOP/s\n",
                r.readTBs, r.copyTBs, r.gemmTflops);

    if (!profileOnly) {  // Logits to the host at batch 64 (64 x 128256 f32): the copy paths the backend could take.
      const size_t bytes = size_t(64) * 128256 * 4;
      void *dev, *pinned;
      MS_CUDA_CHECK(cudaMalloc(&dev, bytes));
      MS_CUDA_CHECK(cudaMallocHost(&pinned, bytes));
      std::vector<char> pageable(bytes);
      cudaStream_t s;
      MS_CUDA_CHECK(cudaStreamCreate(&s));
      auto wall = [&](auto&& fn) {
        std::vector<double> t;
        for (int i = 0; i < 6; i++) {
          auto t0 = Clock::now();
          fn();
          MS_CUDA_CHECK(cudaStreamSynchronize(s));
          if (i) t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        }
        return median(t);
      };
      double toPinned = wall([&] { MS_CUDA_CHECK(cudaMemcpyAsync(pinned, dev, bytes, cudaMemcpyDeviceToHost, s)); });
      double toPageable = wall([&] { MS_CUDA_CHECK(cudaMemcpyAsync(pageable.data(), dev, bytes, cudaMemcpyDeviceToHost, s)); });
      double hostCopy = wall([&] { std::memcpy(pageable.data(), pinned, bytes); });
      std::printf("logits transfer, %.1f MB: D2H to pinned %.2f ms (%.1f GB/s); D2H to pageable %.2f ms; host memcpy %.2f ms\n",
                  bytes / 1e6, toPinned, bytes / toPinned / 1e6, toPageable, hostCopy);
      cudaFree(dev);
      cudaFreeHost(pinned);
      cudaStreamDestroy(s);
    }

    const ms::ModelConfig m = llama8b();
    const int pageSize = 16, ctx = ctxArg ? ctxArg : 1024;
    const std::vector<int> batches = !batchesArg.empty() ? batchesArg
                                     : quick             ? std::vector<int>{1, 64}
                                                         : std::vector<int>{1, 8, 32, 64, 128, 256};
    const std::vector<int> prompts = !promptsArg.empty() ? promptsArg
                                     : quick             ? std::vector<int>{4096}
                                                         : std::vector<int>{512, 1024, 4096, 8192};
    const int maxBatch = *std::max_element(batches.begin(), batches.end());
    ms::KvConfig kv;
    kv.numPages = std::max(maxBatch * ((ctx + pageSize) / pageSize), 8192 / pageSize) + 8;
    ms::BackendOptions o;
    o.device = "cuda:0";
    ms::Status st;
    auto t0 = Clock::now();
    auto base = BenchCudaBackend::make(m, kv, o, &st);
    ok(st, "makeCudaBackend");
    auto& b = *base;
    ok(b.randomInit(0, 0.08f), "randomInit");
    ok(b.finalize(), "finalize");
    ok(b.fillKvRandom(11), "fillKvRandom");
    std::printf("model: llama-3.1-8b shape, %d pages of %zu bytes; init + autotune %.1f s; %s\n", kv.numPages,
                b.pageBytes(), std::chrono::duration<double>(Clock::now() - t0).count(), b.deviceName().c_str());
    const char* kinds[] = {"qkv", "o", "gate_up", "down", "head"};
    std::printf("gemm autotune, ms per product (skinny | cuBLASLt) -> choice:\n");
    for (int k = 0; k < kNumWeightKinds; k++) {
      std::printf("  %-8s", kinds[k]);
      for (int T : {1, 2, 4, 8}) {
        auto [sk, lt] = b.gemmTimes(k, T);
        std::printf(" T=%d %.4f|%.4f %s;", T, sk, lt, b.gemmChoice(k, T));
      }
      std::printf("\n");
    }
    // cuBLASLt's pick per decode bucket (rN: the heuristic's N-th algorithm, skS: split in S parts).
    std::printf("gemm autotune, cuBLASLt per bucket, ms per product [heuristic rank, split-K] (TB/s of the weight):\n");
    std::string tuneJson = "\"autotune\":{\"gemm\":[";  // the same choices for the JSON
    for (int k = 0; k < kNumWeightKinds; k++) {
      const auto g = b.gemmShape(k);
      const double wBytes = 2.0 * double(g.O) * g.K;
      std::printf("  %-8s", kinds[k]);
      for (int bi = 0; bi < kNumGraphBuckets; bi++) {
        const Gemm::Choice c = b.ltChoice(k, bi);
        if (c.ms <= 0.f) continue;
        std::printf(" T=%d %.4f r%d", kGraphBuckets[bi], c.ms, c.rank);
        if (c.splitK) std::printf(" sk%d", c.splitK);
        std::printf(" (%.1f);", wBytes / (c.ms * 1e-3) / 1e12);
        tuneJson += std::string(tuneJson.back() == '[' ? "" : ",") + "{\"kind\":\"" + kinds[k] +
                    "\",\"T\":" + std::to_string(kGraphBuckets[bi]) + ",\"ms\":" + std::to_string(c.ms) +
                    ",\"rank\":" + std::to_string(c.rank) + ",\"splitK\":" + std::to_string(c.splitK) + "}";
      }
      std::printf("\n");
    }
    std::printf("gemm autotune, prefill steps, ms per product [heuristic rank] (TFLOP/s):\n");
    tuneJson += "],\"prefillGemm\":[";
    for (const auto& pt : b.prefillTune()) {
      std::printf("  T=%-5d", pt.numTokens);
      for (int k = 0; k < kHead; k++) {
        const Gemm::Choice c = pt.choice[k];
        const auto g = b.gemmShape(k);
        const double flops = 2.0 * pt.numTokens * double(g.O) * g.K;
        std::printf(" %s %.3f r%d (%.0f);", kinds[k], c.ms, c.rank, flops / (c.ms * 1e-3) / 1e12);
        tuneJson += std::string(tuneJson.back() == '[' ? "" : ",") + "{\"kind\":\"" + kinds[k] + "\",\"T\":" +
                    std::to_string(pt.numTokens) + ",\"ms\":" + std::to_string(c.ms) + ",\"rank\":" +
                    std::to_string(c.rank) + "}";
      }
      std::printf("\n");
    }
    std::printf("decode attention autotune, ms per layer per context bucket, default -> choice (waves, even splits, tiles, split bound):\n");
    tuneJson += "],\"attention\":[";
    for (int bi = 0; bi < kNumGraphBuckets; bi++) {
      if (b.decodeChoice(bi, 0).ms <= 0.f) continue;
      std::printf("  b=%-3d", kGraphBuckets[bi]);
      for (int ci = 0; ci < kNumTunedCtx; ci++) {
        const DecodeChoice c = b.decodeChoice(bi, ci);
        if (c.ms <= 0.f) continue;
        tuneJson += std::string(tuneJson.back() == '[' ? "" : ",") + "{\"batch\":" + std::to_string(kGraphBuckets[bi]) +
                    ",\"ctxBucket\":" + std::to_string(kMinGraphCtx << ci) + ",\"defaultMs\":" +
                    std::to_string(c.defaultMs) + ",\"ms\":" + std::to_string(c.ms) + ",\"waves\":" +
                    std::to_string(c.waves) + ",\"evenSplits\":" + (c.evenSplits ? "true" : "false") +
                    ",\"stages\":" + std::to_string(c.stages) + ",\"maxSplitLen\":" +
                    std::to_string(c.maxSplitLen) + "}";
        std::printf(" ctx %d: %.4f -> %.4f (w%d%s s%d len<=%d);", kMinGraphCtx << ci, c.defaultMs, c.ms, c.waves,
                    c.evenSplits ? " even" : "", c.stages, c.maxSplitLen);
      }
      std::printf("\n");
    }

    // Bytes a decode step must read: every weight but the embedding table, plus the KV of the context.
    double weightBytes = 0;
    for (int k = 0; k < kNumWeightKinds; k++) {
      const auto g = b.gemmShape(k);
      weightBytes += 2.0 * double(g.O) * g.K * (k == kHead ? 1 : m.layers);
    }
    const double kvBytesPerToken = 2.0 * m.layers * 2 * m.kvHeads * m.headDim;
    std::mt19937 rng(5);
    if (choicesOut) {  // this run's start-time choices, for a profiled run to replay (--choices)
      std::FILE* f = std::fopen(choicesOut, "w");
      if (!f) throw std::runtime_error(std::string("cannot write ") + choicesOut);
      const std::string t = b.choicesText();
      std::fwrite(t.data(), 1, t.size(), f);
      std::fclose(f);
    }
    if (choicesIn) {
      std::FILE* f = std::fopen(choicesIn, "r");
      if (!f) throw std::runtime_error(std::string("cannot read ") + choicesIn);
      std::string t;
      char buf[4096];
      for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) t.append(buf, n);
      std::fclose(f);
      std::printf("start-time choices of %s applied, %d lines not applicable\n", choicesIn, b.applyChoices(t));
    }
    b.setTiming(true);
    if (profileOnly) {  // eager steps (ncu replays each kernel; graph time is in the normal run)
      g_profileLast = true;
      b.setGraphsEnabled(false);
      for (int batch : batches) {
        StepTimes t = decode(b, batch, ctx + 1, pageSize, 1, rng, StepOut::Greedy);
        std::printf("profiled decode b=%d ctx=%d (eager wall %.3f ms)\n", batch, ctx, t.wallMs);
      }
      for (int len : prompts) {
        StepTimes t = prefill(b, len, pageSize, 1, rng);
        std::printf("profiled prefill %d tokens (wall %.3f ms)\n", len, t.wallMs);
      }
      return 0;
    }
    tuneJson += "]},";
    std::string json = "{\"device\":\"" + std::string(prop.name) + "\",\"date\":\"" + date + "\"," + tuneJson;
    json += "\"ctx\":" + std::to_string(ctx) + ",\"readTBs\":" + std::to_string(r.readTBs) + ",\"copyTBs\":" + std::to_string(r.copyTBs) +
            ",\"gemmTflops\":" + std::to_string(r.gemmTflops) + ",\"decode\":[";
    std::vector<std::string> rows;
    for (int batch : batches) {
      b.setGraphsEnabled(true);
      StepTimes g = decode(b, batch, ctx + 1, pageSize, quick ? 10 : 30, rng);
      bool usedGraph = b.lastUsedGraph();
      // Host time with sampling on the GPU (tokens out): the engine's path.
      StepTimes tg = decode(b, batch, ctx + 1, pageSize, quick ? 10 : 30, rng, StepOut::Greedy);
      StepTimes ts = decode(b, batch, ctx + 1, pageSize, quick ? 10 : 30, rng, StepOut::Sampled);
      bool tokensGraph = b.lastUsedGraph();
      b.setGraphsEnabled(false);
      StepTimes e = decode(b, batch, ctx + 1, pageSize, 5, rng);
      double floorMs = (weightBytes + double(batch) * (ctx + 1) * kvBytesPerToken) / (r.readTBs * 1e12) * 1e3;
      char line[320];
      std::snprintf(line, sizeof line,
                    "decode b=%-3d ctx=%d | graph %d: wall %7.3f ms, gpu %7.3f ms, host %6.3f ms (%4.1f%%) | floor %6.3f ms "
                    "-> gpu/floor %.3f | eager wall %7.3f gpu %7.3f | %8.0f tok/s",
                    batch, ctx, int(usedGraph), g.wallMs, g.gpuMs, g.wallMs - g.gpuMs, 100 * (g.wallMs - g.gpuMs) / g.wallMs,
                    floorMs, g.gpuMs / floorMs, e.wallMs, e.gpuMs, batch / (g.wallMs * 1e-3));
      rows.push_back(line);
      std::printf("%s\n", line);
      std::snprintf(line, sizeof line,
                    "decode b=%-3d ctx=%d | tokens out, graph %d: greedy wall %7.3f gpu %7.3f host %6.3f ms (%4.1f%%) | "
                    "sampled T0.8 p0.9 wall %7.3f gpu %7.3f host %6.3f ms (%4.1f%%)",
                    batch, ctx, int(tokensGraph), tg.wallMs, tg.gpuMs, tg.wallMs - tg.gpuMs, 100 * (tg.wallMs - tg.gpuMs) / tg.wallMs,
                    ts.wallMs, ts.gpuMs, ts.wallMs - ts.gpuMs, 100 * (ts.wallMs - ts.gpuMs) / ts.wallMs);
      rows.push_back(line);
      std::printf("%s\n", line);
      json += std::string(batch == batches.front() ? "" : ",") + "{\"batch\":" + std::to_string(batch) +
              ",\"tokensGreedyWallMs\":" + std::to_string(tg.wallMs) + ",\"tokensGreedyGpuMs\":" + std::to_string(tg.gpuMs) +
              ",\"tokensSampledWallMs\":" + std::to_string(ts.wallMs) + ",\"tokensSampledGpuMs\":" + std::to_string(ts.gpuMs) +
              ",\"wallMs\":" + std::to_string(g.wallMs) + ",\"gpuMs\":" + std::to_string(g.gpuMs) +
              ",\"floorMs\":" + std::to_string(floorMs) + ",\"eagerWallMs\":" + std::to_string(e.wallMs) +
              ",\"eagerGpuMs\":" + std::to_string(e.gpuMs) + "}";
    }
    // Decode variants of the options that stay (ms::BackendOptions), each a backend of its own built
    // the same way (same weights and KV), graphs captured with it: what the cluster merge and PDL
    // are worth. Losing kernel variants are timed in bench/kernels/.
    json += "],\"decodeVariants\":[";
    struct Variant {
      const char* name;
      void (*set)(ms::BackendOptions&);
    };
    const Variant variants[] = {
        {"decodeClusterCap=0", [](ms::BackendOptions& v) { v.decodeClusterCap = 0; }},
        {"decodeClusterCap=8", [](ms::BackendOptions& v) { v.decodeClusterCap = 8; }},
        {"pdl=false", [](ms::BackendOptions& v) { v.pdl = false; }},
    };
    bool firstVariant = true;
    for (const Variant& variant : variants) {
      if (!variantsOn) break;
      ms::BackendOptions vo = o;
      variant.set(vo);
      auto vbase = BenchCudaBackend::make(m, kv, vo, &st);
      ok(st, "makeCudaBackend (variant)");
      auto& vb = *vbase;
      ok(vb.randomInit(0, 0.08f), "randomInit");
      ok(vb.finalize(), "finalize");
      ok(vb.fillKvRandom(11), "fillKvRandom");
      vb.setTiming(true);
      for (int batch : {1, 64}) {
        if (std::find(batches.begin(), batches.end(), batch) == batches.end()) continue;
        StepTimes g = decode(vb, batch, ctx + 1, pageSize, 15, rng);
        char line[240];
        std::snprintf(line, sizeof line, "decode b=%-3d ctx=1k, %s | graph: wall %7.3f ms, gpu %7.3f ms", batch,
                      variant.name, g.wallMs, g.gpuMs);
        rows.push_back(line);
        std::printf("%s\n", line);
        json += std::string(firstVariant ? "" : ",") + "{\"batch\":" + std::to_string(batch) + ",\"options\":\"" +
                variant.name + "\",\"gpuMs\":" + std::to_string(g.gpuMs) + "}";
        firstVariant = false;
      }
    }
    b.resetGraphs();
    json += "],\"prefill\":[";
    b.setGraphsEnabled(true);
    for (int len : prompts) {
      StepTimes p = prefill(b, len, pageSize, quick ? 2 : 3, rng);
      char line[200];
      std::snprintf(line, sizeof line, "prefill %5d tokens | wall %8.2f ms, gpu %8.2f ms | %8.0f tok/s (wall)", len,
                    p.wallMs, p.gpuMs, len / (p.wallMs * 1e-3));
      rows.push_back(line);
      std::printf("%s\n", line);
      json += std::string(len == prompts.front() ? "" : ",") + "{\"tokens\":" + std::to_string(len) +
              ",\"wallMs\":" + std::to_string(p.wallMs) + ",\"gpuMs\":" + std::to_string(p.gpuMs) + "}";
    }
    json += "],\"profile\":{";
    bool firstProfile = true;
    // Runs `run` (which does `calls` forwards) with the per-stage events on; prints and stores the
    // stages' GPU ms per forward under `key`.
    auto profiled = [&](const std::string& label, const std::string& key, int calls, const std::function<void()>& run) {
      b.setProfile(true);
      run();
      std::printf("profile %s:", label.c_str());
      json += std::string(firstProfile ? "" : ",") + "\"" + key + "\":{";
      firstProfile = false;
      bool first = true;
      for (auto& [name, ms] : b.profile()) {
        std::printf(" %s %.3f;", name.c_str(), ms / calls);
        json += std::string(first ? "" : ",") + "\"" + name + "\":" + std::to_string(ms / calls);
        first = false;
      }
      json += "}";
      std::printf("\n");
      b.setProfile(false);
    };
    // Per-stage GPU time of eager decode steps at every batch of the run (events after every
    // stage; includes launch gaps): where a step's time goes, batch by batch (issue 17).
    for (int batch : batches)  // decode() runs 3 warm-up + 5 steps
      profiled("eager decode b=" + std::to_string(batch) + " (ms per step)", "b" + std::to_string(batch), 8,
               [&] { decode(b, batch, ctx + 1, pageSize, 5, rng); });
    // The same for prefills, back to back as the timed ones: where a long prefill's time goes in the
    // run itself, at the clocks the board holds under that load (its 700 W cap on the H200; Nsight
    // Compute times each kernel alone at fixed clocks).
    for (int len : prompts)  // prefill() with 3 reps runs 4 prefills
      profiled("prefill " + std::to_string(len) + " tokens (ms per prefill)", "p" + std::to_string(len), 4,
               [&] { prefill(b, len, pageSize, 3, rng); });
    json += "}}";
    if (jsonPath) {
      FILE* f = std::fopen(jsonPath, "w");
      if (f) std::fputs(json.c_str(), f), std::fclose(f);
    }
    std::printf("\n== engine bench summary (%s, %s) ==\n", prop.name, date);
    std::printf("roofline: read %.3f TB/s, copy %.3f TB/s (r+w), gemm %.0f TFLOP/s\n", r.readTBs, r.copyTBs, r.gemmTflops);
    for (auto& l : rows) std::printf("%s\n", l.c_str());
  } catch (const CudaError& e) {
    std::fprintf(stderr, "CUDA error: %s\n", e.what());
    return 2;
  }
  return 0;
}
