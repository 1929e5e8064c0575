"""Fine-tuning a pretrained model into a new run: chat SFT (``sft.py``, conversations from
``chat_data.py``) and the classic tasks -- classification, sentiment, NER, translation (``tasks.py``,
with ``task_data.py``, ``backbones.py``, ``encode.py``; used through ``predict.py``; demonstration data
from ``builders.py``). Each task builds its own ``TrainData`` and calls the same ``train()`` as
pretraining, so checkpoints, resume, metrics and reports are identical."""
