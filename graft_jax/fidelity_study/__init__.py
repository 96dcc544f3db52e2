"""The fidelity study of issue 9: cells of the reproduction main job, their fidelity measures, and
the table and plots (driver: experiments/fidelity_study.py)."""
