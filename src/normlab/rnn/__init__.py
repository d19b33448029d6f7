"""Recurrent cells with per-time-step normalization: BN-LSTM (Cooijmans et al. 2017) and LN-LSTM
(Ba et al. 2016), plus the plain LSTM they reduce to with ``norm=None``."""

from normlab.rnn.lstm import NormLSTM as NormLSTM
from normlab.rnn.lstm import NormLSTMCell as NormLSTMCell

__all__ = ["NormLSTM", "NormLSTMCell"]
