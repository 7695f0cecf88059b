"""Step 5 of the data path, encode: the PCL network and its folder format.

:class:`PCLModel` (encoder, projection heads, decoder), :class:`PCLFeatures`
(trunk, face, pose) and the folder a model is saved in (:func:`save_pretrained`,
:func:`push_to_hub`: ``config.json``, ``model.safetensors``, a model card).
"""

from ._network import ChannelAttention, PCLEncoder, PCLFeatures, PCLModel, PCLTrunk
from ._save import push_to_hub, save_pretrained

__all__ = ["ChannelAttention", "PCLEncoder", "PCLFeatures", "PCLModel", "PCLTrunk", "push_to_hub",
           "save_pretrained"]
