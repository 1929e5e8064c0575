"""Fine-tuning a pretrained run into a new run: chat SFT (``sft.py``, conversations from
``chat_data.py``). Each task builds its own ``TrainData`` and calls the same ``train()`` as pretraining,
so checkpoints, resume, metrics and reports are identical."""
