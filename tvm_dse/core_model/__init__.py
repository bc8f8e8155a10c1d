"""Cost without a board: a deterministic model of what a built kernel costs on a named core.

What it observes here: :mod:`.profile` runs the built code under QEMU's user-mode emulation with the
project's TCG plugin (``block_counts.c``), which counts how often every translated block of machine code
runs; :mod:`.throughput` prices each block's steady-state cycles per execution on the core with LLVM's
machine-code analyzer (``llvm-mca -mcpu=CORE``). A kernel's modeled cycles are the sum over its blocks of
executions x cycles per execution. Emulation makes this deterministic (no timer, no co-running work) and
independent of the host's speed; what it leaves out (caches, memory bandwidth, branch mispredictions) is
what the model adds or is validated against, not what the emulator measures.

``scripts/setup_board.sh`` installs what it needs (with the emulated board it runs on): LLVM 19's tools and the plugin, built against the
plugin header of the same QEMU version as the installed ``qemu-user``.
"""

from .cost import (HOST_VALIDATION, MODEL_VERSION, MODELED_LOGS, Core, ModeledCost, function_costs, modeled_cost,
                   module_ms)
from .profile import (Block, ExecutionProfile, LibraryProfile, LibraryRun, ProfilerError, plugin_path, profile_command,
                      profile_libraries)
from .runner import ModeledRunner
from .throughput import block_cycles, function_cycles, modeled_cycles

__all__ = ["Block", "Core", "ExecutionProfile", "HOST_VALIDATION", "LibraryProfile", "LibraryRun", "MODELED_LOGS",
           "MODEL_VERSION", "ModeledCost", "ModeledRunner", "ProfilerError", "block_cycles", "function_costs",
           "function_cycles", "modeled_cost", "modeled_cycles", "module_ms", "plugin_path", "profile_command", "profile_libraries"]
