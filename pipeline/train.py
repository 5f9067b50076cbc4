"""The course's training contract at its usual import path (`pipeline.model.contract` holds the code).

    from pipeline.train import train_classifier, pred_classifier
    python -m pipeline.train --logdir D --datadir D --csv F --weights_col W --csv_out F [--train False --ckpt P]
"""

import sys

from pipeline.model.contract import main, pred_classifier, train_classifier

__all__ = ["main", "pred_classifier", "train_classifier"]

if __name__ == "__main__":
    sys.exit(main())
