// Helpers both backends share: RoPE frequencies and checkpoint tensor plumbing. Header-only.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "../backend.h"
#include "half.h"

namespace ms {

// RoPE inverse frequencies with the Llama 3 scaling rule (transformers _compute_llama3_parameters),
// computed in f32 like transformers does. (headDim / 2,)
inline std::vector<float> ropeInvFreq(const ModelConfig& m) {
  int half = m.headDim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; i++) inv[i] = 1.f / std::pow(m.ropeTheta, float(2 * i) / float(m.headDim));
  if (!m.llama3Scaling) return inv;
  const double pi = 3.141592653589793;
  float lowWavelen = float(m.originalMaxPositions) / m.lowFreqFactor;
  float highWavelen = float(m.originalMaxPositions) / m.highFreqFactor;
  for (int i = 0; i < half; i++) {
    float f = inv[i], wavelen = float(2 * pi / f);
    if (wavelen > lowWavelen) {
      inv[i] = f / m.ropeFactor;
    } else if (wavelen >= highWavelen) {
      float smooth = (float(m.originalMaxPositions) / wavelen - m.lowFreqFactor) / (m.highFreqFactor - m.lowFreqFactor);
      inv[i] = (1.f - smooth) * f / m.ropeFactor + smooth * f;
    }
  }
  return inv;
}

// "[4096, 14336]": shapes in error messages.
inline std::string shapeStr(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

inline size_t elemSize(DType d) { return d == DType::F32 ? 4 : 2; }
inline const char* dtypeName(DType d) { return d == DType::F32 ? "F32" : d == DType::F16 ? "F16" : "BF16"; }

// Element i of a checkpoint buffer of dtype d, as f32.
inline float toF32(DType d, const void* p, size_t i) {
  if (d == DType::F32) return static_cast<const float*>(p)[i];
  uint16_t h = static_cast<const uint16_t*>(p)[i];
  return d == DType::BF16 ? bf16ToF32(h) : f16ToF32(h);
}

}  // namespace ms
