"""The retrieval package's evaluations of a run, each beside what it measures: the multilingual peer encoder
(`peer`, order 42), bitext mining (`mine`, order 45) and the out-of-domain set (`ood`, order 48). They follow
the built-in "retrieval" evaluation (order 40), whose sentence vectors they reuse.

    xling evaluate --run runs/demo --only retrieval,peer,mining,ood
"""

from xling.tasks.retrieval.mine import eval_mining
from xling.tasks.retrieval.ood import eval_ood
from xling.tasks.retrieval.peer import eval_peer

# this package's evaluations, as xling.registry lists them
EVALUATIONS = (eval_peer, eval_mining, eval_ood)
