"""Every asset, check and external asset of one model, stage by stage."""

from assets import (curation, datasets, deployment, evaluation, feedback, governance, ingestion, knowledge, monitoring,
                    retrieval, training)
from resources.spec import ModelSpec

STAGE_MODULES = (ingestion, curation, feedback, knowledge, datasets, retrieval, training, evaluation, deployment, monitoring,
                 governance)


def model_assets(spec: ModelSpec) -> list:
    """The model's graph: raw documents -> ... -> deployed endpoint -> governance audit, keyed `<name>/...`."""
    return [definition for stage in STAGE_MODULES for definition in stage.build(spec)]
