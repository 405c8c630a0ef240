"""NIR export of rate-coded IF nets (``export``), writing .nir files (``files``) and running an
exported graph in snnTorch, an independent NIR consumer (``consumer``). Needs the optional
extra ``nir`` (``pip install snnconv[nir]``); snnconv itself never imports this package."""
