// The N-API boundary: one JS class, NativeBackend, over ms::Backend. Every argument is checked
// here on entry; work runs on one dedicated thread per backend (calls run in order, the event
// loop stays free) and settles a Promise. Errors carry `code`: BAD_ARGUMENT, BAD_TOKEN,
// BAD_CHECKPOINT, BAD_CONFIG, OUT_OF_MEMORY, NATIVE_ERROR, NO_DEVICE, OVER_PLAN (a step past the
// memory plan) or DEVICE_MEMORY (the plan does not fit the device) (native/addon.ts maps them).
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <cmath>
#include <iterator>
#include <regex>

#include "addon-extras.h"
#include "addon-worker.h"
#include "backend.h"
#include "common/logit-processing.h"
#include "common/sampling.h"

namespace {

using ms::addon::codeName;
using ms::addon::fail;
using ms::addon::Job;
using ms::addon::Worker;
using ms::addon::ExtrasInputs;
using ms::addon::parseExtras;
using ms::addon::parsePromptLogprobs;
using ms::addon::PromptLogprobsInputs;

class NativeBackend : public Napi::ObjectWrap<NativeBackend> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeBackend",
                       {InstanceMethod("loadTensor", &NativeBackend::LoadTensor),
                        InstanceMethod("loadTensorRows", &NativeBackend::LoadTensorRows),
                        InstanceMethod("randomInit", &NativeBackend::RandomInit),
                        InstanceMethod("finalize", &NativeBackend::Finalize),
                        InstanceMethod("forward", &NativeBackend::Forward),
                        InstanceMethod("readPages", &NativeBackend::ReadPages),
                        InstanceMethod("writePages", &NativeBackend::WritePages),
                        InstanceMethod("close", &NativeBackend::Close),
                        InstanceMethod("memoryPlan", &NativeBackend::MemoryPlan),
                        InstanceMethod("deviceMemory", &NativeBackend::DeviceMemory),
                        InstanceMethod("exportKvPool", &NativeBackend::ExportKvPool),
                        InstanceMethod("openPeerPool", &NativeBackend::OpenPeerPool),
                        InstanceMethod("copyPeerPages", &NativeBackend::CopyPeerPages),
                        InstanceMethod("forwardWithSend", &NativeBackend::ForwardWithSend),
                        InstanceMethod("supplyMasks", &NativeBackend::SupplyMasks),
                        InstanceMethod("maskGateStats", &NativeBackend::MaskGateStats),
                        InstanceMethod("joinNvshmem", &NativeBackend::JoinNvshmem),
                        InstanceMethod("openNvshmemPeer", &NativeBackend::OpenNvshmemPeer),
                        InstanceAccessor("pageBytes", &NativeBackend::PageBytes, nullptr),
                        InstanceAccessor("numPages", &NativeBackend::NumPages, nullptr),
                        InstanceAccessor("deviceName", &NativeBackend::DeviceName, nullptr),
                        InstanceAccessor("options", &NativeBackend::Options, nullptr)});
  }

  // new NativeBackend(device, config, numPages, pageSize, options); numPages 0 = auto. options =
  // { numThreads, cpuIsa: 'auto'|'base'|'avx2'|'avx512', cudaGraphs, pdl, decodeClusterCap,
  // nvshmemPut } (ms::BackendOptions; every one required: the defaults live in TypeScript,
  // common/env.ts) plus the plan's optional caps { maxBatchTokens, maxNumSeqs,
  // gpuMemoryUtilization } (ms::BackendOptions defaults).
  explicit NativeBackend(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeBackend>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 5 || !info[0].IsString() || !info[1].IsObject() || !info[4].IsObject())
      fail(env, "BAD_ARGUMENT", "NativeBackend(device, config, numPages, pageSize, options)");
    std::string device = info[0].As<Napi::String>();
    Napi::Object c = info[1].As<Napi::Object>();
    m_.vocab = intField(env, c, "vocab");
    m_.hidden = intField(env, c, "hidden");
    m_.intermediate = intField(env, c, "intermediate");
    m_.layers = intField(env, c, "layers");
    m_.heads = intField(env, c, "heads");
    m_.kvHeads = intField(env, c, "kvHeads");
    m_.headDim = intField(env, c, "headDim");
    m_.rmsEps = float(numField(env, c, "rmsEps"));
    m_.ropeTheta = float(numField(env, c, "ropeTheta"));
    m_.llama3Scaling = boolField(env, c, "llama3Scaling");
    m_.ropeFactor = float(numField(env, c, "ropeFactor"));
    m_.lowFreqFactor = float(numField(env, c, "lowFreqFactor"));
    m_.highFreqFactor = float(numField(env, c, "highFreqFactor"));
    m_.originalMaxPositions = intField(env, c, "originalMaxPositions");
    m_.tiedEmbeddings = boolField(env, c, "tiedEmbeddings");
    m_.maxPositions = intField(env, c, "maxPositions");
    m_.qkvBias = boolField(env, c, "qkvBias");
    m_.qkNorm = boolField(env, c, "qkNorm");
    kv_.numPages = intArg(env, info[2], "numPages", 0);
    kv_.pageSize = intArg(env, info[3], "pageSize", 1);
    ms::BackendOptions o = backendOptions(env, info[4].As<Napi::Object>());
    o.device = device;

    ms::Status st;
    std::unique_ptr<ms::Backend> b;
    std::smatch match;
    if (device == "cpu") {
      b = ms::makeCpuBackend(m_, kv_, o, &st);
    } else if (std::regex_match(device, match, std::regex("cuda:([0-9]+)"))) {
#ifdef MS_WITH_CUDA
      b = ms::makeCudaBackend(m_, kv_, o, &st);
#else
      fail(env, "NO_DEVICE", "device '" + device + "': this build has no CUDA backend");
#endif
    } else {
      fail(env, "NO_DEVICE", "unknown device '" + device + "' (expected 'cpu' or 'cuda:N')");
    }
    if (!b || !st.ok())
      fail(env, st.code == ms::Code::BAD_ARGUMENT ? "BAD_CONFIG" : codeName(st.code),
           st.message.empty() ? "backend creation failed" : st.message);
    pageBytes_ = b->pageBytes();
    deviceName_ = b->deviceName();
    numPages_ = std::make_shared<std::atomic<int>>(b->memoryPlan().numPages);  // 0 until finalize sizes an auto pool
    options_ = o;
    worker_ = std::make_shared<Worker>();
    worker_->backend = std::move(b);
    auto* holder = new std::shared_ptr<Worker>(worker_);
    worker_->tsfn = Napi::ThreadSafeFunction::New(
        env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "microserve-native", 0, 1,
        [](Napi::Env env, std::shared_ptr<Worker>* holder) {
          Worker& w = **holder;
          if (w.thread.joinable()) w.thread.join();  // its last act was the release that led here
          if (w.hookAdded) napi_remove_env_cleanup_hook(env, Worker::onExit, &w);
          delete holder;
        },
        holder);
    worker_->tsfn.Unref(env);
    napi_add_env_cleanup_hook(env, Worker::onExit, worker_.get());
    worker_->hookAdded = true;
    std::weak_ptr<Worker> weak = worker_;
    Worker* raw = worker_.get();
    raw->thread = std::thread([raw, weak] { raw->loop(weak); });
  }

  ~NativeBackend() override { stopWorker(); }

 private:
  static int intField(Napi::Env env, Napi::Object o, const char* key) {
    return intArg(env, o.Get(key), (std::string("config.") + key).c_str(), 0);
  }
  static double numField(Napi::Env env, Napi::Object o, const char* key) {
    Napi::Value v = o.Get(key);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()))
      fail(env, "BAD_CONFIG", std::string("config.") + key + " must be a finite number");
    return v.As<Napi::Number>().DoubleValue();
  }
  static bool boolField(Napi::Env env, Napi::Object o, const char* key) {
    Napi::Value v = o.Get(key);
    if (!v.IsBoolean()) fail(env, "BAD_CONFIG", std::string("config.") + key + " must be a boolean");
    return v.As<Napi::Boolean>();
  }
  static ms::BackendOptions backendOptions(Napi::Env env, Napi::Object v) {
    auto flag = [&](const char* key) {
      Napi::Value f = v.Get(key);
      if (!f.IsBoolean()) fail(env, "BAD_CONFIG", std::string("options.") + key + " must be a boolean");
      return bool(f.As<Napi::Boolean>());
    };
    ms::BackendOptions o;
    o.numThreads = intArg(env, v.Get("numThreads"), "options.numThreads", 0);
    Napi::Value isa = v.Get("cpuIsa");
    const std::string isaName = isa.IsString() ? isa.As<Napi::String>().Utf8Value() : "";
    const char* isaNames[] = {"auto", "base", "avx2", "avx512"};
    auto at = std::find(std::begin(isaNames), std::end(isaNames), isaName);
    if (at == std::end(isaNames)) fail(env, "BAD_CONFIG", "options.cpuIsa must be 'auto', 'base', 'avx2' or 'avx512'");
    o.cpuIsa = ms::CpuIsa(at - std::begin(isaNames));
    o.cudaGraphs = flag("cudaGraphs");
    o.pdl = flag("pdl");
    o.decodeClusterCap = intArg(env, v.Get("decodeClusterCap"), "options.decodeClusterCap", 0);
    o.nvshmemPut = flag("nvshmemPut");
    // The memory plan's caps: optional (ms::BackendOptions defaults).
    if (!v.Get("maxBatchTokens").IsUndefined()) o.maxBatchTokens = intArg(env, v.Get("maxBatchTokens"), "options.maxBatchTokens", 1);
    if (!v.Get("maxNumSeqs").IsUndefined()) o.maxNumSeqs = intArg(env, v.Get("maxNumSeqs"), "options.maxNumSeqs", 1);
    if (!v.Get("gpuMemoryUtilization").IsUndefined()) {
      Napi::Value u = v.Get("gpuMemoryUtilization");
      double d = u.IsNumber() ? u.As<Napi::Number>().DoubleValue() : -1;
      if (!(d > 0 && d <= 1)) fail(env, "BAD_ARGUMENT", "options.gpuMemoryUtilization must be a number in (0, 1]");
      o.gpuMemoryUtilization = d;
    }
    return o;
  }

  static int intArg(Napi::Env env, Napi::Value v, const char* name, int min) {
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1e300;
    if (!(d >= min && d <= INT_MAX && d == double(int64_t(d))))
      fail(env, "BAD_ARGUMENT", std::string(name) + " must be an integer >= " + std::to_string(min));
    return int(d);
  }
  template <class T>
  static T typedArray(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char* name, const char* what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
      fail(env, "BAD_ARGUMENT", std::string(name) + " must be " + what);
    return v.As<T>();
  }

  void stopWorker() {
    if (!worker_) return;
    worker_->requestStop(false);
    worker_.reset();
  }

  Napi::Value submit(Napi::Env env, std::unique_ptr<Job> job) {
    if (!worker_) fail(env, "NATIVE_ERROR", "backend is closed");
    Napi::Promise p = job->deferred.Promise();
    job->keep.push_back(Napi::Persistent(Value()));  // the backend object itself
    if (worker_->pending++ == 0) worker_->tsfn.Ref(env);
    {
      std::lock_guard<std::mutex> lock(worker_->mu);
      worker_->queue.push_back(job.release());
    }
    worker_->cv.notify_one();
    return p;
  }

  // loadTensor(name, dtype 0=F32 1=F16 2=BF16, shape number[], data Uint8Array): Promise<void>
  Napi::Value LoadTensor(const Napi::CallbackInfo& info) { return loadRows(info, false); }

  // loadTensorRows(name, dtype, shape, rowBegin, data Uint8Array): Promise<void> — whole rows of
  // the tensor from rowBegin (Backend::loadTensorRows checks them).
  Napi::Value LoadTensorRows(const Napi::CallbackInfo& info) { return loadRows(info, true); }

  Napi::Value loadRows(const Napi::CallbackInfo& info, bool isPart) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) fail(env, "BAD_ARGUMENT", "name must be a string");
    std::string name = info[0].As<Napi::String>();
    int dtype = intArg(env, info[1], "dtype", 0);
    if (dtype > 2) fail(env, "BAD_ARGUMENT", "dtype must be 0 (F32), 1 (F16) or 2 (BF16)");
    if (!info[2].IsArray()) fail(env, "BAD_ARGUMENT", "shape must be an array");
    Napi::Array a = info[2].As<Napi::Array>();
    std::vector<int64_t> shape;
    for (uint32_t i = 0; i < a.Length(); i++) shape.push_back(intArg(env, a.Get(i), "shape[i]", 0));
    const int64_t rowBegin = isPart ? intArg(env, info[3], "rowBegin", 0) : 0;
    auto data = typedArray<Napi::Uint8Array>(env, info[isPart ? 4 : 3], napi_uint8_array, "data", "a Uint8Array");
    auto job = std::make_unique<Job>(env);
    const void* ptr = data.Data();
    size_t n = data.ByteLength();
    job->keep.push_back(Napi::Persistent(data.As<Napi::Object>()));
    job->run = [name, dtype, shape, rowBegin, ptr, n](ms::Backend& b) {
      return b.loadTensorRows(name, ms::DType(dtype), shape, rowBegin, ptr, n);
    };
    return submit(env, std::move(job));
  }

  // randomInit(seed, std): Promise<void>
  Napi::Value RandomInit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t seed = uint64_t(intArg(env, info[0], "seed", 0));
    if (!info[1].IsNumber() || !(info[1].As<Napi::Number>().DoubleValue() > 0))
      fail(env, "BAD_ARGUMENT", "std must be a positive number");
    float sd = info[1].As<Napi::Number>().FloatValue();
    auto job = std::make_unique<Job>(env);
    job->run = [seed, sd](ms::Backend& b) { return b.randomInit(seed, sd); };
    return submit(env, std::move(job));
  }

  // finalize(): the plan is complete after it (an auto pool is sized here on CUDA).
  Napi::Value Finalize(const Napi::CallbackInfo& info) {
    auto job = std::make_unique<Job>(info.Env());
    auto numPages = numPages_;
    job->run = [numPages](ms::Backend& b) {
      ms::Status st = b.finalize();
      numPages->store(b.memoryPlan().numPages);
      return st;
    };
    return submit(info.Env(), std::move(job));
  }

  // deviceMemory(): Promise<Float64Array(2)> — free and total device bytes now (NO_DEVICE on CPU).
  Napi::Value DeviceMemory(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Float64Array out = Napi::Float64Array::New(env, 2);
    double* p = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [p](ms::Backend& b) {
      size_t f = 0, t = 0;
      ms::Status st = b.deviceMemory(&f, &t);
      p[0] = double(f);
      p[1] = double(t);
      return st;
    };
    return submit(env, std::move(job));
  }

  // memoryPlan(): Promise<Float64Array(15)> — maxBatchTokens, maxNumSeqs, maxContext, numPages,
  // pageSize, kvTokens, maxRequestTokens, weightsBytes, arenaBytes, graphBytes, kvBytes,
  // deviceTotal, deviceFree, numGraphs, isHost (native/native-backend.ts names them).
  Napi::Value MemoryPlan(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Float64Array out = Napi::Float64Array::New(env, 15);
    double* p = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [p](ms::Backend& b) {
      ms::MemoryPlan m = b.memoryPlan();
      const double v[15] = {double(m.maxBatchTokens), double(m.maxNumSeqs), double(m.maxContext), double(m.numPages),
                            double(m.pageSize), double(m.kvTokens), double(m.maxRequestTokens), double(m.weightsBytes),
                            double(m.arenaBytes), double(m.graphBytes), double(m.kvBytes), double(m.deviceTotal),
                            double(m.deviceFree), double(m.numGraphs), m.isHost ? 1.0 : 0.0};
      std::copy(v, v + 15, p);
      return ms::Status::Ok();
    };
    return submit(env, std::move(job));
  }

  struct ForwardInputs {
    std::vector<int32_t> tokens, seqLens, startPos, tables;
    int maxPages = 0;
    bool allLogits = false;
    size_t rows = 0;
    bool sampling = false;  // tokens instead of logits; the four arrays below are (numSeqs,)
    std::vector<float> temperature, topP;
    std::vector<uint32_t> seed, step;
    std::shared_ptr<ExtrasInputs> extras;     // sampling.extras, or null
    std::shared_ptr<PromptLogprobsInputs> prompt;  // sampling.promptLogprobs, or null
    int64_t gateId = -1;                      // sampling.maskGate.id, or -1
    int gateTimeoutMs = 0;
    std::shared_ptr<ms::addon::Gate> gate;    // registered by attachGate
    std::vector<Napi::ObjectReference> outs;  // extras' output arrays: moved into the job's keep
    // The batch; with sampling, tokens go to tokensOut (numSeqs,).
    ms::Batch batch(int32_t* tokensOut = nullptr) const {
      ms::Batch b;
      b.tokens = tokens.data();
      b.numTokens = int(tokens.size());
      b.numSeqs = int(seqLens.size());
      b.seqLens = seqLens.data();
      b.startPos = startPos.data();
      b.pageTables = tables.data();
      b.maxPagesPerSeq = maxPages;
      b.allLogits = allLogits;
      if (sampling) {
        b.temperature = temperature.data();
        b.topP = topP.data();
        b.seed = seed.data();
        b.step = step.data();
        b.tokensOut = tokensOut;
        if (extras) b.extras = &extras->x;
        if (prompt) b.promptLogprobs = &prompt->p;
        b.maskGate = gate.get();
      }
      return b;
    }
  };

  // forward(tokens Int32Array, seqLens Int32Array, startPos Int32Array, pageTables Int32Array,
  //         maxPagesPerSeq, allLogits[, sampling]): Promise<Float32Array (rows, vocab)>, or with
  // sampling ({temperature, topP: Float32Array, seed, step: Uint32Array}, one entry per sequence)
  // Promise<Int32Array (numSeqs,)> of sampled tokens (no logits leave the device).
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto in = forwardInputs(info, 6);
    if (in->sampling) {
      Napi::Int32Array toks = Napi::Int32Array::New(env, in->seqLens.size());
      int32_t* tp = toks.Data();
      auto job = std::make_unique<Job>(env);
      job->out = Napi::Persistent(toks.As<Napi::Object>());
      for (auto& r : in->outs) job->keep.push_back(std::move(r));
      in->outs.clear();
      job->run = [in, tp](ms::Backend& b) { return b.forward(in->batch(tp), nullptr); };
      attachGate(env, in.get(), job.get());
      return submit(env, std::move(job));
    }
    Napi::Float32Array out = Napi::Float32Array::New(env, in->rows * size_t(m_.vocab));
    float* outPtr = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [in, outPtr](ms::Backend& b) { return b.forward(in->batch(), outPtr); };
    return submit(env, std::move(job));
  }

  // forwardWithSend(...forward's six arguments, peerId, srcPages Int32Array, dstPages Int32Array
  // [, peerIds Int32Array][, sampling]): Promise<{ logits: Float32Array, timeline: Float32Array (3 * layers + 2) }>.
  // peerId -1: own pool; peerIds (one per page pair) overrides peerId. With sampling (as forward's)
  // the result has tokens: Int32Array (numSeqs,) and an empty logits array.
  Napi::Value ForwardWithSend(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto in = forwardInputs(info, 10);
    int peerId = intArg(env, info[6], "peerId", -1);
    auto src = std::make_shared<std::vector<int32_t>>(pageIds(env, info[7]));
    auto dst = typedArray<Napi::Int32Array>(env, info[8], napi_int32_array, "dstPages", "an Int32Array");
    if (dst.ElementLength() != src->size()) fail(env, "BAD_ARGUMENT", "srcPages and dstPages differ in length");
    auto dstIds = std::make_shared<std::vector<int32_t>>(dst.Data(), dst.Data() + dst.ElementLength());
    auto peerIds = std::make_shared<std::vector<int32_t>>();
    if (info.Length() > 9 && !info[9].IsUndefined()) {
      auto pi = typedArray<Napi::Int32Array>(env, info[9], napi_int32_array, "peerIds", "an Int32Array");
      if (pi.ElementLength() != src->size()) fail(env, "BAD_ARGUMENT", "peerIds and srcPages differ in length");
      peerIds->assign(pi.Data(), pi.Data() + pi.ElementLength());
    }
    Napi::Float32Array logits = Napi::Float32Array::New(env, in->sampling ? 0 : in->rows * size_t(m_.vocab));
    Napi::Float32Array timeline = Napi::Float32Array::New(env, size_t(3 * m_.layers + 2));
    Napi::Object out = Napi::Object::New(env);
    out.Set("logits", logits);
    out.Set("timeline", timeline);
    int32_t* kp = nullptr;
    if (in->sampling) {
      Napi::Int32Array toks = Napi::Int32Array::New(env, in->seqLens.size());
      out.Set("tokens", toks);
      kp = toks.Data();
    }
    float* lp = in->sampling ? nullptr : logits.Data();
    float* tp = timeline.Data();
    size_t tn = timeline.ElementLength();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out);
    for (auto& r : in->outs) job->keep.push_back(std::move(r));
    in->outs.clear();
    job->run = [in, peerId, src, dstIds, peerIds, lp, kp, tp, tn](ms::Backend& b) {
      ms::LayerSend send;
      send.peerId = peerId;
      send.srcPages = src->data();
      send.dstPages = dstIds->data();
      send.n = int(src->size());
      send.peerIds = peerIds->empty() ? nullptr : peerIds->data();
      std::vector<float> t;
      ms::Status st = b.forwardWithSend(in->batch(kp), lp, send, &t);
      for (size_t i = 0; i < t.size() && i < tn; i++) tp[i] = t[i];
      return st;
    };
    attachGate(env, in.get(), job.get());
    return submit(env, std::move(job));
  }

  // Registers the forward's mask gate (sampling.maskGate) with its job; BAD_ARGUMENT when the id
  // is held by a forward that has not settled.
  void attachGate(Napi::Env env, ForwardInputs* in, Job* job) {
    if (in->gateId < 0) return;
    if (!worker_) fail(env, "NATIVE_ERROR", "backend is closed");
    const uint32_t id = uint32_t(in->gateId);
    if (worker_->gates.has(id)) fail(env, "BAD_ARGUMENT", "sampling.maskGate.id " + std::to_string(id) + " is held by a forward that has not settled");
    const size_t words = (size_t(m_.vocab) + 31) / 32;
    in->gate = worker_->gates.add(id, in->gateTimeoutMs, in->seqLens.size() * words);
    job->gateId = in->gateId;
  }

  // supplyMasks(id, masks Uint32Array (numSeqs, ceil(vocab / 32)) | null): boolean — opens the
  // mask gate `id` of a submitted forward (sampling.maskGate); null: no masks (rows sampled
  // unmasked). The array is read in place until that forward settles: do not write or detach it
  // meanwhile. False when no forward waits on `id` any more (it settled, failed or timed out).
  Napi::Value SupplyMasks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const double d = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= double(UINT32_MAX) && d == double(int64_t(d)))) fail(env, "BAD_ARGUMENT", "supplyMasks: id must be an integer in [0, 2^32)");
    ms::addon::GateTable::Entry* e = worker_ ? worker_->gates.find(uint32_t(d)) : nullptr;
    const uint32_t* masks = nullptr;
    if (!info[1].IsNull()) {
      auto a = typedArray<Napi::Uint32Array>(env, info[1], napi_uint32_array, "supplyMasks: masks", "a Uint32Array or null");
      if (e && a.ElementLength() != e->numWords)
        fail(env, "BAD_ARGUMENT", "supplyMasks: masks has " + std::to_string(a.ElementLength()) + " words, expected " +
                                      std::to_string(e->numWords) + " (numSeqs x ceil(vocab / 32))");
      if (!e) return Napi::Boolean::New(env, false);
      e->masks = Napi::Persistent(a.As<Napi::Object>());
      masks = a.Data();
    }
    return Napi::Boolean::New(env, e != nullptr && e->gate->open(masks));
  }

  // maskGateStats(): Float64Array [gates waited at, ms the backend's thread waited at them in all].
  Napi::Value MaskGateStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!worker_) fail(env, "NATIVE_ERROR", "backend is closed");
    Napi::Float64Array out = Napi::Float64Array::New(env, 2);
    out[0] = double(worker_->gates.stats->numWaits.load());
    out[1] = double(worker_->gates.stats->waitNs.load()) / 1e6;
    return out;
  }

  // joinNvshmem(uid Uint8Array(128), rank, nranks): Promise<Float64Array(4)> — pe, npes,
  // nvshmemx_init_status, init ms. Collective with the job's other members; before finalize.
  Napi::Value JoinNvshmem(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto u = typedArray<Napi::Uint8Array>(env, info[0], napi_uint8_array, "uid", "a Uint8Array");
    if (u.ByteLength() != size_t(ms::kNvshmemUidBytes)) fail(env, "BAD_ARGUMENT", "uid must be 128 bytes");
    auto uid = std::make_shared<std::vector<uint8_t>>(u.Data(), u.Data() + u.ByteLength());
    int rank = intArg(env, info[1], "rank", 0);
    int nranks = intArg(env, info[2], "nranks", 1);
    if (rank >= nranks) fail(env, "BAD_ARGUMENT", "rank must be < nranks");
    Napi::Float64Array out = Napi::Float64Array::New(env, 4);
    double* p = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [uid, rank, nranks, p](ms::Backend& b) {
      ms::NvshmemInfo ni;
      ms::Status st = b.joinNvshmem(uid->data(), rank, nranks, &ni);
      p[0] = ni.pe;
      p[1] = ni.npes;
      p[2] = ni.initStatus;
      p[3] = ni.initMs;
      return st;
    };
    return submit(env, std::move(job));
  }

  // openNvshmemPeer(pe): Promise<Int32Array(2)> — peer id, 1 if reached directly (nvshmem_ptr).
  Napi::Value OpenNvshmemPeer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int pe = intArg(env, info[0], "pe", 0);
    Napi::Int32Array out = Napi::Int32Array::New(env, 2);
    int32_t* p = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [pe, p](ms::Backend& b) {
      int id = -1;
      bool direct = false;
      ms::Status st = b.openNvshmemPeer(pe, &id, &direct);
      p[0] = id;
      p[1] = direct ? 1 : 0;
      return st;
    };
    return submit(env, std::move(job));
  }

  // exportKvPool(): Promise<Uint8Array> — the 64-byte IPC handle, then the device UUID (32 hex chars).
  Napi::Value ExportKvPool(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint8Array out = Napi::Uint8Array::New(env, ms::kIpcHandleBytes + 32);
    uint8_t* p = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [p](ms::Backend& b) {
      std::string uuid;
      ms::Status st = b.exportKvPool(p, &uuid);
      if (st.ok()) std::memcpy(p + ms::kIpcHandleBytes, uuid.data(), std::min<size_t>(32, uuid.size()));
      return st;
    };
    return submit(env, std::move(job));
  }

  // openPeerPool(handle Uint8Array(64), peerNumPages): Promise<Int32Array(1)> — the peer id.
  Napi::Value OpenPeerPool(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = typedArray<Napi::Uint8Array>(env, info[0], napi_uint8_array, "handle", "a Uint8Array");
    if (h.ByteLength() != size_t(ms::kIpcHandleBytes)) fail(env, "BAD_ARGUMENT", "handle must be 64 bytes");
    auto handle = std::make_shared<std::vector<uint8_t>>(h.Data(), h.Data() + h.ByteLength());
    int peerPages = intArg(env, info[1], "peerNumPages", 1);
    Napi::Int32Array out = Napi::Int32Array::New(env, 1);
    int32_t* p = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [handle, peerPages, p](ms::Backend& b) {
      int id = -1;
      ms::Status st = b.openPeerPool(handle->data(), peerPages, &id);
      *p = id;
      return st;
    };
    return submit(env, std::move(job));
  }

  // copyPeerPages(peerId, localPages Int32Array, peerPages Int32Array, toPeer): Promise<Float32Array(1)>
  // — the copy's GPU time in ms. peerId -1 copies within this pool.
  Napi::Value CopyPeerPages(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int peerId = intArg(env, info[0], "peerId", -1);
    auto local = std::make_shared<std::vector<int32_t>>(pageIds(env, info[1]));
    auto pp = typedArray<Napi::Int32Array>(env, info[2], napi_int32_array, "peerPages", "an Int32Array");
    if (pp.ElementLength() != local->size()) fail(env, "BAD_ARGUMENT", "localPages and peerPages differ in length");
    auto peer = std::make_shared<std::vector<int32_t>>(pp.Data(), pp.Data() + pp.ElementLength());
    if (!info[3].IsBoolean()) fail(env, "BAD_ARGUMENT", "toPeer must be a boolean");
    bool toPeer = info[3].As<Napi::Boolean>();
    Napi::Float32Array out = Napi::Float32Array::New(env, 1);
    float* p = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [peerId, local, peer, toPeer, p](ms::Backend& b) {
      return b.copyPeerPages(peerId, local->data(), peer->data(), int(local->size()), toPeer, p);
    };
    return submit(env, std::move(job));
  }

  // Validates forward's six arguments and copies them (the worker reads the copy).
  // samplingArg: index of the optional sampling argument (-1: none).
  std::shared_ptr<ForwardInputs> forwardInputs(const Napi::CallbackInfo& info, int samplingArg = -1) {
    Napi::Env env = info.Env();
    auto tokens = typedArray<Napi::Int32Array>(env, info[0], napi_int32_array, "tokens", "an Int32Array");
    auto seqLens = typedArray<Napi::Int32Array>(env, info[1], napi_int32_array, "seqLens", "an Int32Array");
    auto startPos = typedArray<Napi::Int32Array>(env, info[2], napi_int32_array, "startPos", "an Int32Array");
    auto tables = typedArray<Napi::Int32Array>(env, info[3], napi_int32_array, "pageTables", "an Int32Array");
    int maxPages = intArg(env, info[4], "maxPagesPerSeq", 1);
    if (!info[5].IsBoolean()) fail(env, "BAD_ARGUMENT", "allLogits must be a boolean");
    bool allLogits = info[5].As<Napi::Boolean>();

    size_t numSeqs = seqLens.ElementLength(), numTokens = tokens.ElementLength();
    if (numSeqs == 0) fail(env, "BAD_ARGUMENT", "a batch needs at least one sequence");
    if (startPos.ElementLength() != numSeqs)
      fail(env, "BAD_ARGUMENT", "startPos has " + std::to_string(startPos.ElementLength()) + " entries, expected " +
                                    std::to_string(numSeqs));
    if (tables.ElementLength() != numSeqs * size_t(maxPages))
      fail(env, "BAD_ARGUMENT", "pageTables has " + std::to_string(tables.ElementLength()) + " entries, expected " +
                                    std::to_string(numSeqs * maxPages) + " (numSeqs x maxPagesPerSeq)");
    size_t total = 0;
    const int numPages = poolPages(env);
    for (size_t s = 0; s < numSeqs; s++) {
      int len = seqLens[s], start = startPos[s];
      std::string seq = "sequence " + std::to_string(s);
      if (len < 1) fail(env, "BAD_ARGUMENT", seq + ": seqLen must be >= 1");
      if (start < 0) fail(env, "BAD_ARGUMENT", seq + ": startPos must be >= 0");
      if (int64_t(start) + len > int64_t(maxPages) * kv_.pageSize)
        fail(env, "BAD_ARGUMENT", seq + ": positions up to " + std::to_string(int64_t(start) + len) +
                                      " need more than maxPagesPerSeq=" + std::to_string(maxPages) + " pages");
      int64_t need = (int64_t(start) + len + kv_.pageSize - 1) / kv_.pageSize;
      for (int64_t p = 0; p < need; p++) {
        int id = tables[s * maxPages + p];
        if (id < 0 || id >= numPages)
          fail(env, "BAD_ARGUMENT", seq + ": page id " + std::to_string(id) + " at page table index " +
                                        std::to_string(p) + " is outside [0, " + std::to_string(numPages) + ")");
      }
      total += size_t(len);
    }
    if (total != numTokens)
      fail(env, "BAD_ARGUMENT", "tokens has " + std::to_string(numTokens) + " entries but seqLens sum to " +
                                    std::to_string(total));
    for (size_t i = 0; i < numTokens; i++)
      if (tokens[i] < 0 || tokens[i] >= m_.vocab)
        fail(env, "BAD_TOKEN", "token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                   " is outside the vocabulary [0, " + std::to_string(m_.vocab) + ")");

    auto in = std::make_shared<ForwardInputs>();
    in->tokens.assign(tokens.Data(), tokens.Data() + numTokens);
    in->seqLens.assign(seqLens.Data(), seqLens.Data() + numSeqs);
    in->startPos.assign(startPos.Data(), startPos.Data() + numSeqs);
    in->tables.assign(tables.Data(), tables.Data() + tables.ElementLength());
    in->maxPages = maxPages;
    in->allLogits = allLogits;
    in->rows = allLogits ? numTokens : numSeqs;
    if (samplingArg >= 0 && int(info.Length()) > samplingArg && !info[samplingArg].IsUndefined())
      samplingInputs(env, info[samplingArg], in.get(), m_.vocab);
    return in;
  }

  // sampling = {temperature, topP: Float32Array, seed, step: Uint32Array}, one entry per sequence.
  static void samplingInputs(Napi::Env env, Napi::Value v, ForwardInputs* in, int vocab) {
    if (!v.IsObject()) fail(env, "BAD_ARGUMENT", "sampling must be an object");
    Napi::Object o = v.As<Napi::Object>();
    const size_t numSeqs = in->seqLens.size();
    auto sized = [&](const Napi::TypedArray& a, const char* name) {
      if (a.ElementLength() != numSeqs)
        fail(env, "BAD_ARGUMENT", std::string("sampling.") + name + " has " + std::to_string(a.ElementLength()) +
                                      " entries, expected " + std::to_string(numSeqs) + " (one per sequence)");
    };
    auto t = typedArray<Napi::Float32Array>(env, o.Get("temperature"), napi_float32_array, "sampling.temperature", "a Float32Array");
    auto p = typedArray<Napi::Float32Array>(env, o.Get("topP"), napi_float32_array, "sampling.topP", "a Float32Array");
    auto seed = typedArray<Napi::Uint32Array>(env, o.Get("seed"), napi_uint32_array, "sampling.seed", "a Uint32Array");
    auto step = typedArray<Napi::Uint32Array>(env, o.Get("step"), napi_uint32_array, "sampling.step", "a Uint32Array");
    sized(t, "temperature"), sized(p, "topP"), sized(seed, "seed"), sized(step, "step");
    if (in->allLogits) fail(env, "BAD_ARGUMENT", "sampling uses last-token logits: allLogits must be false");
    for (size_t s = 0; s < numSeqs; s++) {
      std::string e = ms::samplingParamError(t[s], p[s]);
      if (!e.empty()) fail(env, "BAD_ARGUMENT", "sequence " + std::to_string(s) + ": sampling " + e);
    }
    in->sampling = true;
    in->temperature.assign(t.Data(), t.Data() + numSeqs);
    in->topP.assign(p.Data(), p.Data() + numSeqs);
    in->seed.assign(seed.Data(), seed.Data() + numSeqs);
    in->step.assign(step.Data(), step.Data() + numSeqs);
    Napi::Value ex = o.Get("extras");
    if (!ex.IsUndefined()) in->extras = parseExtras(env, ex, numSeqs, vocab, &in->outs);
    Napi::Value pl = o.Get("promptLogprobs");
    if (!pl.IsUndefined()) in->prompt = parsePromptLogprobs(env, pl, numSeqs, in->tokens.size(), vocab, &in->outs);
    // maskGate = { id: integer in [0, 2^32), timeoutMs: integer in [1, 3600000] }: masks supplied late (supplyMasks)
    Napi::Value mg = o.Get("maskGate");
    if (!mg.IsUndefined()) {
      if (!mg.IsObject()) fail(env, "BAD_ARGUMENT", "sampling.maskGate must be an object");
      Napi::Object g = mg.As<Napi::Object>();
      const double id = g.Get("id").IsNumber() ? g.Get("id").As<Napi::Number>().DoubleValue() : -1;
      if (!(id >= 0 && id <= double(UINT32_MAX) && id == double(int64_t(id))))
        fail(env, "BAD_ARGUMENT", "sampling.maskGate.id must be an integer in [0, 2^32)");
      const int timeoutMs = intArg(env, g.Get("timeoutMs"), "sampling.maskGate.timeoutMs", 1);
      if (timeoutMs > 3600000) fail(env, "BAD_ARGUMENT", "sampling.maskGate.timeoutMs must be at most 3600000");
      if (in->extras && !in->extras->mask.empty()) fail(env, "BAD_ARGUMENT", "sampling.maskGate and sampling.extras.allowedMask exclude each other");
      if (!in->extras) {
        in->extras = std::make_shared<ExtrasInputs>();
        in->extras->link();
      }
      in->gateId = int64_t(id);
      in->gateTimeoutMs = timeoutMs;
    }
  }

  std::vector<int32_t> pageIds(Napi::Env env, Napi::Value v) {
    auto ids = typedArray<Napi::Int32Array>(env, v, napi_int32_array, "pageIds", "an Int32Array");
    std::vector<int32_t> out(ids.Data(), ids.Data() + ids.ElementLength());
    const int numPages = poolPages(env);
    for (size_t i = 0; i < out.size(); i++)
      if (out[i] < 0 || out[i] >= numPages)
        fail(env, "BAD_ARGUMENT", "page id " + std::to_string(out[i]) + " at index " + std::to_string(i) +
                                      " is outside [0, " + std::to_string(numPages) + ")");
    return out;
  }

  // Pages of the pool; an auto pool has none until finalize sized it.
  int poolPages(Napi::Env env) const {
    const int n = numPages_ ? numPages_->load() : 0;
    if (n <= 0) fail(env, "BAD_ARGUMENT", "the KV pool is not sized yet (kvPages auto: finalize first)");
    return n;
  }

  // readPages(pageIds Int32Array): Promise<Uint8Array (n, pageBytes)>
  Napi::Value ReadPages(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto ids = std::make_shared<std::vector<int32_t>>(pageIds(env, info[0]));
    Napi::Uint8Array out = Napi::Uint8Array::New(env, ids->size() * pageBytes_);
    uint8_t* outPtr = out.Data();
    auto job = std::make_unique<Job>(env);
    job->out = Napi::Persistent(out.As<Napi::Object>());
    job->run = [ids, outPtr](ms::Backend& b) { return b.readPages(ids->data(), int(ids->size()), outPtr); };
    return submit(env, std::move(job));
  }

  // writePages(pageIds Int32Array, data Uint8Array (n, pageBytes)): Promise<void>
  Napi::Value WritePages(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto ids = std::make_shared<std::vector<int32_t>>(pageIds(env, info[0]));
    auto data = typedArray<Napi::Uint8Array>(env, info[1], napi_uint8_array, "data", "a Uint8Array");
    if (data.ByteLength() != ids->size() * pageBytes_)
      fail(env, "BAD_ARGUMENT", "data has " + std::to_string(data.ByteLength()) + " bytes, expected " +
                                    std::to_string(ids->size() * pageBytes_) + " (pages x pageBytes)");
    const uint8_t* ptr = data.Data();
    auto job = std::make_unique<Job>(env);
    job->keep.push_back(Napi::Persistent(data.As<Napi::Object>()));
    job->run = [ids, ptr](ms::Backend& b) { return b.writePages(ids->data(), int(ids->size()), ptr); };
    return submit(env, std::move(job));
  }

  // close(): queued calls still run; later calls fail; memory is freed once the queue is empty.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    stopWorker();
    return info.Env().Undefined();
  }

  Napi::Value PageBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(pageBytes_)); }
  Napi::Value NumPages(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(numPages_ ? numPages_->load() : 0)); }
  Napi::Value DeviceName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), deviceName_); }
  // The options this backend was built with (what `status` shows).
  Napi::Value Options(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const char* isaNames[] = {"auto", "base", "avx2", "avx512"};
    Napi::Object o = Napi::Object::New(env);
    o.Set("numThreads", options_.numThreads);
    o.Set("cpuIsa", isaNames[int(options_.cpuIsa)]);
    o.Set("cudaGraphs", options_.cudaGraphs);
    o.Set("pdl", options_.pdl);
    o.Set("decodeClusterCap", options_.decodeClusterCap);
    o.Set("nvshmemPut", options_.nvshmemPut);
    return o;
  }

  ms::ModelConfig m_;
  ms::KvConfig kv_;
  size_t pageBytes_ = 0;
  std::shared_ptr<std::atomic<int>> numPages_;  // pages of the pool, written by finalize for an auto pool
  std::string deviceName_;
  ms::BackendOptions options_;
  std::shared_ptr<Worker> worker_;
};

// nvshmemUniqueId(): Uint8Array(128) — a new NVSHMEM job's bootstrap id; this process must join
// it as rank 0. Throws NO_DEVICE where the build has no NVSHMEM.
Napi::Value NvshmemUniqueId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array out = Napi::Uint8Array::New(env, ms::kNvshmemUidBytes);
#ifdef MS_WITH_CUDA
  ms::Status st = ms::nvshmemUniqueId(out.Data());
#else
  ms::Status st = ms::Status::Error(ms::Code::NO_DEVICE, "this build has no CUDA backend, hence no NVSHMEM");
#endif
  if (!st.ok()) fail(env, codeName(st.code), st.message);
  return out;
}

// allocHostBuffer(bytes, device): { buffer: ArrayBuffer, isPinned: boolean } — a staging buffer
// for the checkpoint loader of a backend on `device`: page-locked (cudaHostAlloc) for 'cuda:N'
// where built with CUDA and the device answers, so copies to the device from it are DMA at the
// link's rate; else (and always for 'cpu', which never touches CUDA) ordinary memory. Give it back
// with releaseHostBuffer once no load reads it (the garbage collector frees it otherwise).
Napi::Value AllocHostBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsString()) fail(env, "BAD_ARGUMENT", "device must be a string");
  const std::string device = info[1].As<Napi::String>();
  const double d = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 1 && d <= double(INT_MAX) && d == double(int64_t(d)))) fail(env, "BAD_ARGUMENT", "bytes must be an integer in [1, 2^31)");
  const int64_t bytes = int64_t(d);
  Napi::Object out = Napi::Object::New(env);
  void* pinned = nullptr;
#ifdef MS_WITH_CUDA
  std::smatch cuda;
  if (std::regex_match(device, cuda, std::regex("cuda:([0-9]+)"))) pinned = ms::allocPinnedHost(size_t(bytes), std::stoi(cuda[1].str()));
#endif
  if (pinned) {
    out.Set("buffer", Napi::ArrayBuffer::New(env, pinned, size_t(bytes), [](Napi::Env, void* p) {
#ifdef MS_WITH_CUDA
      ms::freePinnedHost(p);
#endif
    }));
  } else {
    out.Set("buffer", Napi::ArrayBuffer::New(env, size_t(bytes)));
  }
  out.Set("isPinned", Napi::Boolean::New(env, pinned != nullptr));
  return out;
}

// releaseHostBuffer(buffer): detaches a buffer of allocHostBuffer, which frees its memory now.
Napi::Value ReleaseHostBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) fail(env, "BAD_ARGUMENT", "buffer must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (!ab.IsDetached()) ab.Detach();
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeBackend", NativeBackend::Init(env));
  exports.Set("allocHostBuffer", Napi::Function::New(env, AllocHostBuffer));
  exports.Set("releaseHostBuffer", Napi::Function::New(env, ReleaseHostBuffer));
  exports.Set("nvshmemUniqueId", Napi::Function::New(env, NvshmemUniqueId));
#ifdef MS_WITH_CUDA
  exports.Set("hasCuda", Napi::Boolean::New(env, true));
#else
  exports.Set("hasCuda", Napi::Boolean::New(env, false));
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(microserve_native, Init)
