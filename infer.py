"""Classifies texts with early exit: python infer.py --checkpoint WORKDIR "some text".

Not yet: exit policies and the batched early-exit engines land with the early-exit issue.
"""

import sys

if __name__ == "__main__":
    sys.exit("infer.py: not yet implemented (early-exit issue); see README.md for what works now")
