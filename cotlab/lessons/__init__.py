"""One module per lesson: its experiment, its evidence and its "What we saw" sentences.

    prompting (00)  distillation (01)  dpo (03)  faithfulness (05)  scaling (06)  changes (07)
    rl_expansion (08)  objectives (09)  chain_forms (10)  onpolicy (11)

Lessons 02 and 04 need nothing of their own beyond the pipeline (`cotlab.evidence` phrases their
results, and `cotlab report` shares it).  A lesson module imports the pipeline modules beside this
folder and `cotlab.stats`, never another lesson's module; a notebook imports `cotlab.lesson` (the
front door) and its own lesson module.
"""
