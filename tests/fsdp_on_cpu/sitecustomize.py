"""Test-only switch (tests/test_fsdp_cpu.py puts this folder first on PYTHONPATH of the processes it launches):
accelerate's FSDP path, run on CPU processes over gloo.

accelerate 1.16 assigns DistributedType.FSDP only to GPU-type setups: in AcceleratorState.__init__ the branch that
reads ACCELERATE_USE_FSDP is under `elif self.distributed_type in [MULTI_GPU, MULTI_MLU, ..., MULTI_NEURON]`, and a
CPU process group is MULTI_CPU, so an FSDP config on a CPU trains as DDP. While AcceleratorState is built, this
switch shows that branch MULTI_GPU instead of MULTI_CPU (and puts it back after): the rest is accelerate's and
torch's own FSDP2 code (fully_shard on the gloo group, full-state-dict gathering, FSDP checkpoints and their
loading on resume), the Trainer's and llm_tune's. llm_tune's launch check refuses FSDP on a CPU because, without
this switch, it would be DDP; under the switch that premise is false, so the switch lifts that one rule.
"""

import os

if os.environ.get("LLM_TUNE_TEST_FSDP_ON_CPU") == "1":
    from accelerate import state as _state
    from accelerate.utils import DistributedType

    _accelerator_state_init = _state.AcceleratorState.__init__

    def _init(self, *args, **kwargs):
        shared = _state.PartialState._shared_state
        cpu_group = shared.get("distributed_type") == DistributedType.MULTI_CPU
        if cpu_group:
            shared["distributed_type"] = DistributedType.MULTI_GPU
        try:
            _accelerator_state_init(self, *args, **kwargs)
        finally:
            if cpu_group and shared.get("distributed_type") == DistributedType.MULTI_GPU:
                shared["distributed_type"] = DistributedType.MULTI_CPU  # not FSDP: nothing to pretend

    _state.AcceleratorState.__init__ = _init

    import llm_tune.train.launch_checks as _checks

    _checks._sharding_needs_gpus = lambda *args: None
