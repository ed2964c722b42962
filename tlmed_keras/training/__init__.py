"""Fine-tuning job: config, MedMNIST metrics, schedules, callbacks, run directory, trainer."""
