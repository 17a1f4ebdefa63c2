/**
 * KV transport names, shared by the topology file (which picks one) and the engine (which sets
 * it up): `host` (page bytes as ws frames, anywhere), `cuda-ipc` (CUDA IPC on one host),
 * `nvshmem` (one-sided puts within an NVSHMEM job), `auto` (the fastest both ends support,
 * falling back to `host`).
 */
export const TRANSPORTS = ['auto', 'host', 'cuda-ipc', 'nvshmem'] as const;

export type TransportName = (typeof TRANSPORTS)[number];
