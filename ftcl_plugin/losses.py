"""FTCL's two contrastive losses over video pairs: FSD contrasting (Sec. 3.2) and LCS contrasting (Sec. 3.3).

Both take per-pair snippet sequences (already selected and in temporal order, see :mod:`.selectors`) and the
pair labels (see :mod:`.miners`), and delegate the recursions to :mod:`ftcl_plugin.functional`.

Defaults, one place (``variant="paper"`` / ``variant="official"``):

================================  =====================  ================================  ==============================
number                            paper                  official (authors' release)       where it comes from
================================  =====================  ================================  ==============================
projection output size            1024 per head          1024 split in halves (512 each)   paper Sec. 4.1 / release
insert/delete activation          ``x - 1`` (penalty)    identity (a bonus)                paper Sec. 3.2 text / release
smooth-max temperature ``gamma``  0.1                    0.1                               paper gamma=10 (Eq. 5) = release
FSD ranking loss                  softplus(x / 0.2)      mean(neg) - mean(pos)             authors' unused helper / release
LCS threshold                     ``c >= 0.92``          ``c > 0.92``                      paper Eq. 6 / release
LCS loss                          BCE on r / min(M, N)   mean(neg) - mean(pos)             Eq. 7 with its sign fixed / release
cosine eps                        1e-8                   1e-8                              plugin decision (release has none)
================================  =====================  ================================  ==============================

Each loss lives in its own module (``_fsd_loss``, ``_lcs_loss``), with the pair plumbing they share in
``_pairwise``; this module is their public home.
"""

from __future__ import annotations

from ._fsd_loss import FSDLoss, FSDTerms
from ._lcs_loss import LCSLoss, LCSTerms
from ._pairwise import Variant

__all__ = ["FSDLoss", "FSDTerms", "LCSLoss", "LCSTerms", "Variant"]
