"""council.evaluation: whether the council answers better, measured on checkable questions.

``questions`` reads an eval file, ``run`` asks each question of the council and
of each model alone through the bus, ``report`` turns the records into the
report (and replays the chairman's strategies on them). The CLI, the dashboard's
Eval page and the benchmarks use it; it is no role, so it may read the
chairman's strategies to replay them.
"""
