"""Device layer: GPUs (NVML or simulated) and CPUs (RAPL). Never sees HTTP."""
