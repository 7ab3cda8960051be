"""One Scaleout backend per cellard: the model store and the combiner state, built on first use.

The main server and the node-local endpoint register the same servicers on the same backend, so a
client on the local endpoint and the operator on the main socket see one combiner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent.core.app import App
from agent.scaleout.combiner import Combiner
from agent.scaleout.models import ModelStore


@dataclass
class Scaleout:
    models: ModelStore
    combiner: Combiner

    def close(self) -> None:
        self.models.close()
        self.combiner.close()


def scaleout_for(app: App) -> Scaleout:
    """``app.scaleout``, built on the first call from ``[paths] state_dir`` and ``[models]``."""
    if app.scaleout is None:
        state = app.config.paths.state_dir
        os.makedirs(state, mode=0o700, exist_ok=True)
        combiner = Combiner(os.path.join(state, "scaleout.db"))
        models = ModelStore(os.path.join(state, "models"), app.config.models.max_bytes,
                            in_use=combiner.pending_model_ids)
        app.scaleout = Scaleout(models=models, combiner=combiner)
    return app.scaleout
