"""Orchestration: turns a sweep into steps and runs them locally, under docker or on SageMaker."""
