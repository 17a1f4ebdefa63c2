// Paged decode attention (flash-decoding): the split plan, the cluster plan, and the entry point
// that runs the tensor-core kernel (attention-decode-mma.cu) on them. The kernel it replaced (lanes
// per key, shuffles, separate RoPE) is kept with its reference check and timing loop in
// bench/kernels/decode-attention-simt.cu.
#include <algorithm>
#include <string>

#include "check.h"
#include "kernels.h"

namespace ms::cuda {

void planDecodeSplits(int numQueries, int kvHeads, int maxCtx, int numSms, int* splitLen, int* maxSplits, int waves,
                      int maxLen) {
  if (maxLen < 64 || maxLen > kMaxSplitLen || maxLen % 64 != 0)
    throw CudaError("planDecodeSplits: maxLen must be a multiple of 64 in [64, " + std::to_string(kMaxSplitLen) + "]",
                    false);
  int groups = numQueries * kvHeads;
  int want = (waves * numSms + groups - 1) / groups;               // enough blocks for `waves` waves
  int minCount = (maxCtx + maxLen - 1) / maxLen;                  // bounded work per block
  int count = want > minCount ? want : minCount;
  int len = (maxCtx + count - 1) / count;
  len = (len + 63) / 64 * 64;
  if (len < 64) len = 64;
  if (len > maxLen) len = maxLen;
  *splitLen = len;
  *maxSplits = (maxCtx + len - 1) / len;
}

void planDecodeCluster(DecodeAttentionArgs& a, int cap) {
  int c = 1;
  while (c * 2 <= cap && c * 2 <= a.maxSplits) c *= 2;
  if (c < kMinCluster) return;
  const int maxCtx = a.maxSplits * a.splitLen;
  const int bound = ((maxCtx + c - 1) / c + 15) / 16 * 16;
  if (bound > kDefaultSplitLen) return;
  a.clusterSize = c;
  a.splitLen = bound;
}

void decodeAttention(const DecodeAttentionArgs& args, cudaStream_t s) {
  if (args.numQueries == 0) return;
  if (args.splitLen <= 0 || args.splitLen > kMaxSplitLen || args.splitLen % 64 != 0 || args.maxSplits <= 0 ||
      !isSupportedGqa(args.heads / args.kv.kvHeads) || (args.stages != 2 && args.stages != 3))
    throw CudaError("decodeAttention: bad split plan, GQA group outside 1.." + std::to_string(kMaxGqa) + " or stages not 2 or 3", false);
  DecodeAttentionArgs a = args;
  planDecodeCluster(a, std::min(a.clusterCap, decodeMaxCluster()));
  decodeAttentionMma(a, s);
}

}  // namespace ms::cuda
