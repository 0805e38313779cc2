"""The jobs: training (``training.train_and_evaluate``), the checkpoint evaluation job
(``evaluation``) and its trials (``trials``). Each starts from the shared run set-up
(``reid_jax.run``) and composes the rooms below it (train, evaluation)."""
