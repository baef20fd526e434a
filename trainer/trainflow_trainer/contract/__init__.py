"""The contract across the TypeScript–Python seam, generated from the zod schemas (src/contract/): the job spec,
the job status, the resolved pipeline and stage config and the protocol constants. `make contract` regenerates
`models.py`, `constants.py` and `schema.json`; a test fails when they are stale. Edit the zod schemas, never
these files."""

from .constants import (
    BAD_INPUT_PREFIX,
    EXIT_BAD_INPUT,
    EXIT_DONE,
    EXIT_PREEMPTED,
    PROTOCOL_VERSION,
    STATUS_LINE_PREFIX,
)
from .models import (
    AlgorithmConfig,
    CheckpointConfig,
    DataConfig,
    DataSource,
    JobSpec,
    JobStatus,
    ModelBlock,
    PackingConfig,
    PipelineConfig,
    ResourcesConfig,
    RftConfig,
    RolloutConfig,
    SamplingConfig,
    StageConfig,
    TasksConfig,
    TrainConfig,
)

__all__ = [
    "BAD_INPUT_PREFIX",
    "EXIT_BAD_INPUT",
    "EXIT_DONE",
    "EXIT_PREEMPTED",
    "PROTOCOL_VERSION",
    "STATUS_LINE_PREFIX",
    "AlgorithmConfig",
    "CheckpointConfig",
    "DataConfig",
    "DataSource",
    "JobSpec",
    "JobStatus",
    "ModelBlock",
    "PackingConfig",
    "PipelineConfig",
    "ResourcesConfig",
    "RftConfig",
    "RolloutConfig",
    "SamplingConfig",
    "StageConfig",
    "TasksConfig",
    "TrainConfig",
]
