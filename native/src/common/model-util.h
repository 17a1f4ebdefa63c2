// Helpers both backends share: RoPE frequencies and checkpoint tensor plumbing. Header-only.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
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

// The checks of one loadTensorRows part, shared by both backends: `want` is the tensor's expected
// shape ((rows,) or (rows, cols)); the part must be whole rows of it, inside it. Sets *numRows.
inline Status checkRowPart(const std::string& name, const std::vector<int64_t>& want, const std::vector<int64_t>& shape,
                           DType dtype, int64_t rowBegin, size_t numBytes, int64_t* numRows) {
  if (shape != want)
    return Status::Error(Code::BAD_CHECKPOINT,
                         "tensor '" + name + "': expected shape " + shapeStr(want) + ", got " + shapeStr(shape));
  const size_t rowBytes = (want.size() == 2 ? size_t(want[1]) : 1) * elemSize(dtype);
  const int64_t n = int64_t(numBytes / rowBytes);
  if (numBytes % rowBytes != 0 || rowBegin < 0 || n <= 0 || rowBegin + n > want[0])
    return Status::Error(Code::BAD_CHECKPOINT, "tensor '" + name + "': " + std::to_string(numBytes) + " bytes at row " +
                                                   std::to_string(rowBegin) + " are not whole rows of " +
                                                   shapeStr(shape) + " " + dtypeName(dtype));
  *numRows = n;
  return Status::Ok();
}

// Which rows of each tensor have arrived (loadTensorRows parts): refuses a part that overlaps rows
// already given, and says when a tensor is complete.
class RowLedger {
 public:
  // Records rows [begin, end) of `name` (a tensor of `rows` rows); BAD_CHECKPOINT on an overlap.
  Status add(const std::string& name, int64_t begin, int64_t end, int64_t rows, bool* isComplete) {
    std::map<int64_t, int64_t>& parts = parts_[name];  // begin -> end, disjoint
    auto next = parts.lower_bound(begin);
    bool overlaps = next != parts.end() && next->first < end;
    if (next != parts.begin() && std::prev(next)->second > begin) overlaps = true;
    if (overlaps)
      return Status::Error(Code::BAD_CHECKPOINT, "tensor '" + name + "': rows [" + std::to_string(begin) + ", " +
                                                     std::to_string(end) + ") were already loaded");
    parts[begin] = end;
    *isComplete = (numRows_[name] += end - begin) == rows;
    return Status::Ok();
  }

 private:
  std::map<std::string, std::map<int64_t, int64_t>> parts_;
  std::map<std::string, int64_t> numRows_;
};

}  // namespace ms
