"""Run loops selected by --script."""

from .eval_only import eval_only
from .parallel import parallel
from .train import train
from .train_eval import train_eval
