"""End-to-end tests of ``--upstream`` for CoLA, W-TALC and STPN against stand-in checkouts written here.

Each stand-in has the pinned commit's file names, module names, class and function names and signatures and the
behaviour the patch works around (CoLA's ``.cuda()`` calls, W-TALC's CUDA default tensor type at import, its
pickled annotation arrays and cwd-relative paths, STPN's command-line parsing at import), with trivial bodies
written for these tests. The commit check is relaxed with the documented environment switch.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from patches import _common  # noqa: E402
from tests.pickle_payloads import write_malicious, write_object_npy  # noqa: E402

pytest.importorskip("ftcl_plugin.localization")

COLA_FILES = {
    "core/__init__.py": "",
    "eval/__init__.py": "",
    "eval/eval_detection.py": """
        import numpy as np
        from joblib import Parallel, delayed

        def compute_average_precision_detection(scores):
            return float(np.mean(np.array(scores, dtype=np.float)))  # the removed alias, inside each task

        class ANETdetection:
            def wrapper_compute_average_precision(self, per_class):
                # As CoLA's evaluator: Parallel(n_jobs=len(self.activity_index)) over the classes.
                return Parallel(n_jobs=len(per_class))(
                    delayed(compute_average_precision_detection)(s) for s in per_class)
    """,
    "core/config.py": """
        import numpy as np
        from easydict import EasyDict as edict
        cfg = edict()
        cfg.LR = '[0.0001]*6000'
        cfg.MODAL, cfg.FEATS_FPS, cfg.NUM_SEGMENTS, cfg.BATCH_SIZE = 'all', 25, 24, 16
        cfg.TIOU_THRESH = np.linspace(0.1, 0.7, 7)
    """,
    "core/utils.py": """
        import numpy as np, torch
        def set_seed(seed):
            torch.manual_seed(seed); np.random.seed(seed)
    """,
    "core/model.py": """
        import torch
        from torch import nn
        class Actionness_Module(nn.Module):
            def __init__(self, len_feature, num_classes):
                super().__init__()
                self.f_embed = nn.Sequential(nn.Conv1d(len_feature, 32, 3, padding=1), nn.ReLU())
                self.f_cls = nn.Sequential(nn.Conv1d(32, num_classes, 1, bias=False), nn.ReLU())
        class CoLA(nn.Module):
            def __init__(self, cfg):
                super().__init__()
                self.actionness_module = Actionness_Module(cfg.FEATS_DIM, cfg.NUM_CLASSES)
            def forward(self, x):
                emb = self.actionness_module.f_embed(x.permute(0, 2, 1))
                mask = torch.ones(emb.shape[0], emb.shape[2]).cuda()  # as upstream: .cuda() in the forward
                cas = self.actionness_module.f_cls(emb * mask[:, None]).permute(0, 2, 1)
                k = max(1, x.shape[1] // 5)
                scores = torch.softmax(cas.topk(k, dim=1).values.mean(1), dim=1)
                return scores, {}, cas.sum(2), cas
    """,
    "core/loss.py": """
        import torch
        from torch import nn
        class TotalLoss(nn.Module):
            def forward(self, video_scores, label, contrast_pairs):
                target = label / label.sum(1, keepdim=True)
                loss = nn.functional.binary_cross_entropy(video_scores, target.cuda())
                return loss, {'Loss/Action': loss, 'Loss/Total': loss}
    """,
    "core/dataset.py": """
        import json, os
        import numpy as np, torch
        from torch.utils import data
        class NpyFeature(data.Dataset):
            def __init__(self, data_path, mode, modal, feature_fps, num_segments, sampling, class_dict, seed=-1,
                         supervision='weak'):
                self.root, self.mode, self.n, self.classes = data_path, mode, num_segments, class_dict
                with open(os.path.join(data_path, f'split_{mode}.txt')) as f:
                    self.videos = [line.strip() for line in f if line.strip()]
                with open(os.path.join(data_path, 'gt.json')) as f:
                    self.anno = json.load(f)['database']
            def __len__(self):
                return len(self.videos)
            def __getitem__(self, i):
                v = self.videos[i]
                parts = [np.load(os.path.join(self.root, 'features', self.mode, s, v + '.npy')) for s in ('rgb', 'flow')]
                x = np.concatenate(parts, axis=1).astype(np.float32)
                idx = np.linspace(0, len(x) - 1, self.n).astype(int)
                y = np.zeros(len(self.classes), dtype=np.float32)
                for a in self.anno[v]['annotations']:
                    y[self.classes[a['label']]] = 1
                return torch.from_numpy(x[idx]), y, torch.Tensor(0), v, len(x)
    """,
    "main_cola.py": """
        import numpy as np, torch
        import core.utils as utils
        from core.model import CoLA
        from core.loss import TotalLoss
        from core.config import cfg
        from core.dataset import NpyFeature
        from eval.eval_detection import ANETdetection
        from torch.utils.tensorboard import SummaryWriter
        from terminaltables import AsciiTable

        def train_one_step(net, loader_iter, optimizer, criterion, writter, step):
            net.train()
            data, label, _, _, _ = next(loader_iter)
            optimizer.zero_grad()
            video_scores, contrast_pairs, _, _ = net(data.cuda())
            cost, loss = criterion(video_scores, label.cuda(), contrast_pairs)
            cost.backward()
            optimizer.step()
            for key in loss:
                writter.add_scalar(key, loss[key].cpu().item(), step)
            return cost

        @torch.no_grad()
        def test_all(net, cfg, test_loader, test_info, step, writter=None, model_file=None):
            net.eval()
            for data, label, _, vid, n in test_loader:
                net(data.cuda())
            per_class = ANETdetection().wrapper_compute_average_precision([[0.125], [0.125, 0.125]])
            test_info['step'].append(step)
            test_info['test_acc'].append(0.5)
            test_info['average_mAP'].append(float(np.mean(per_class)))
            for t in cfg.TIOU_THRESH:
                test_info['mAP@{:.1f}'.format(t)].append(0.125)
    """,
}

WTALC_FILES = {
    "main.py": "",
    "classificationMAP.py": "",
    "detectionMAP.py": "",
    "options.py": """
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument('--lr', type=float, default=0.0001)
        parser.add_argument('--batch-size', type=int, default=10)
        parser.add_argument('--feature-size', default=2048)
        parser.add_argument('--num-class', default=20)
        parser.add_argument('--dataset-name', default='Thumos14reduced')
        parser.add_argument('--max-seqlen', type=int, default=750)
        parser.add_argument('--Lambda', type=float, default=0.5)
        parser.add_argument('--num-similar', default=3)
        parser.add_argument('--seed', type=int, default=1)
        parser.add_argument('--feature-type', type=str, default='I3D')
    """,
    "utils.py": "",
    "model.py": """
        import torch
        from torch import nn
        import torch.nn.functional as F
        torch.set_default_tensor_type('torch.cuda.FloatTensor')
        class Model(nn.Module):
            def __init__(self, n_feature, n_class):
                super().__init__()
                self.fc = nn.Linear(n_feature, n_feature)
                self.classifier = nn.Linear(n_feature, n_class)
                self.dropout = nn.Dropout(0.7)
            def forward(self, inputs, is_training=True):
                x = F.relu(self.fc(inputs))
                if is_training:
                    x = self.dropout(x)
                return x, self.classifier(x)
    """,
    "video_dataset.py": """
        import numpy as np
        class Dataset():
            def __init__(self, args):
                name = args.dataset_name
                self.path_to_annotations = name + '-Annotations/'
                self.features = np.load('%s-%s-JOINTFeatures.npy' % (name, args.feature_type), encoding='bytes')
                subset = np.load(self.path_to_annotations + 'subset.npy')
                classes = [c.decode('utf-8') for c in np.load(self.path_to_annotations + 'classlist.npy')]
                labels = np.load(self.path_to_annotations + 'labels_all.npy')  # pickled object array
                self.num_class, self.feature_size = args.num_class, args.feature_size
                self.batch_size, self.t_max = args.batch_size, args.max_seqlen
                self.trainidx = [i for i, s in enumerate(subset) if s.decode('utf-8') == 'validation']
                self.testidx = [i for i, s in enumerate(subset) if s.decode('utf-8') != 'validation']
                self.labels = [np.isin(classes, list(l)).astype(np.float32) for l in labels]
            def load_data(self, n_similar=3, is_training=True):
                idx = np.random.choice(self.trainidx, size=self.batch_size)
                t = max(len(self.features[i]) for i in idx)
                x = np.stack([np.pad(self.features[i], ((0, t - len(self.features[i])), (0, 0))) for i in idx])
                return x, np.stack([self.labels[i] for i in idx])
    """,
    "train.py": """
        import numpy as np, torch
        import torch.nn.functional as F
        from tensorboard_logger import log_value
        torch.set_default_tensor_type('torch.cuda.FloatTensor')
        def MILL(element_logits, seq_len, batch_size, labels, device):
            labels = labels / labels.sum(1, keepdim=True)
            pooled = torch.stack([element_logits[i, :seq_len[i]].mean(0) for i in range(batch_size)])
            return -(labels * F.log_softmax(pooled, 1)).sum(1).mean()
        def CASL(x, element_logits, seq_len, n_similar, labels, device):
            return (x.mean() - x.mean()).abs()
        def train(itr, dataset, args, model, optimizer, logger, device):
            features, labels = dataset.load_data(n_similar=args.num_similar)
            seq_len = np.sum(np.max(np.abs(features), axis=2) > 0, axis=1)
            features = torch.from_numpy(features).float().to(device)
            labels = torch.from_numpy(labels).float().to(device)
            final_features, element_logits = model(features)
            milloss = MILL(element_logits, seq_len, args.batch_size, labels, device)
            casloss = CASL(final_features, element_logits, seq_len, args.num_similar, labels, device)
            total_loss = args.Lambda * milloss + (1 - args.Lambda) * casloss
            logger.log_value('milloss', milloss, itr)
            logger.log_value('casloss', casloss, itr)
            optimizer.zero_grad()
            total_loss.backward()
            optimizer.step()
    """,
    "test.py": """
        import os
        def test(itr, dataset, args, model, logger, device):
            assert os.path.isfile(dataset.path_to_annotations + 'Ambiguous_test.txt')
            with open(args.dataset_name + '-results.log', 'a+') as f:
                f.write(str(itr) + ' 5.00 4.00 3.00 2.00 1.00 9.00\\n')
    """,
}

STPN_FILES = {
    "util.py": "import numpy as np\n",
    "STPN.py": """
        import torch
        from torch import nn
        class TemporalProposal(nn.Module):
            def __init__(self, classes=20):
                super().__init__()
                self.fc1, self.relu, self.fc2 = nn.Linear(1024, 16), nn.ReLU(), nn.Linear(16, 1)
                self.sigmoid, self.fc3 = nn.Sigmoid(), nn.Linear(1024, 20)
            def forward(self, inp):
                x = inp
                inp = self.sigmoid(self.fc2(self.relu(self.fc1(inp))))
                return self.sigmoid(self.fc3(torch.sum(inp * x, dim=1))), inp
        def get_model(gpu, classes=20):
            return TemporalProposal(classes).cuda()
    """,
    "thumos_i3d_per_video.py": """
        import json, os
        import numpy as np, torch
        from torch.utils.data.dataloader import default_collate
        import h5py
        class Thumos(torch.utils.data.Dataset):
            def __init__(self, split_file, root, batch_size, mode, train):
                with open(split_file) as f:
                    split = json.load(f)
                # (video, first two class ids, frames, actions), as the reproduction's make_dataset keeps them
                self.data = [(v, np.array(([a[0] for a in e['actions']] + [0])[:2]), e['frame'], e['actions'])
                             for v, e in split.items()]
                self.root, self.mode = root, mode
            def __getitem__(self, index):
                name, pair, frames, actions = self.data[index]
                n = sum(1 for item in range(0, frames + 1, 24) if item + 49 <= frames)
                feature = np.array([np.load(os.path.join(self.root, name, self.mode + '/' + str(i) + '.npy'))
                                    for i in range(1, n + 1)], dtype=np.float32)
                label = np.zeros(20)
                for class_id in pair:
                    if class_id:
                        label[class_id - 1] = 1
                return feature, label, [name, frames, actions]
            def __len__(self):
                return len(self.data)
        def mt_collate_fn(batch):
            return default_collate(batch)
    """,
    "train_model.py": """
        import argparse, os
        from util import *
        parser = argparse.ArgumentParser()
        parser.add_argument('-mode', type=str)
        parser.add_argument('-gpu', type=str, default='1')
        args = parser.parse_args()
        os.environ['CUDA_VISIBLE_DEVICES'] = str(args.gpu)
        import torch
        import torchvision
        import STPN
        def l1_penalty(var):
            return torch.abs(var).sum()
        def run_network(model, data, gpu, criterion):
            inputs, labels, other = data
            outputs, attention = model(inputs.cuda(gpu))
            loss = criterion(outputs, labels.cuda(gpu).float())
            loss += l1_penalty(attention) / 5000
            return outputs, loss
        def adjust_learning_rate(optimizer, epoch):
            for group in optimizer.param_groups:
                group['lr'] = 0.0001 * (0.1 ** (epoch // 80))
    """,
}


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.mark.parametrize(("name", "files", "layout"), [("cola", COLA_FILES, "cola"), ("wtalc", WTALC_FILES, "wtalc"),
                                                       ("stpn", STPN_FILES, "acmnet")])
def test_upstream_mode_end_to_end(name: str, files: dict[str, str], layout: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ftcl_plugin.data.synthetic import generate
    from integrations.common.runner import main

    data = generate(tmp_path / "data", layout=layout, num_classes=3, num_train=8, num_test=6, feature_dim=16,
                    max_length=40)
    checkout = _write(tmp_path / name, files)
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    out = tmp_path / "run"
    status = main(name, ["--upstream", str(checkout), "--data", str(data), "--iterations", "2", "--out", str(out),
                         "--no-plot", "--set", "optim.batch_size=4"])
    assert status == 0
    report = json.loads((out / "upstream.json").read_text())
    assert report["steps"] == 2 and report["ftcl_steps"] == 2
    assert "failed" not in report["upstream_evaluation"] or name == "stpn"
    assert "ftcl_loss" in (out / "metrics.csv").read_text().splitlines()[0]
    assert json.loads((out / "table.json").read_text())["rows"][0]["name"].endswith("(upstream) (last epoch)")
    leftovers = [n for n, m in list(sys.modules.items()) if str(getattr(m, "__file__", "") or "").startswith(
        str(checkout.resolve()))]
    assert leftovers == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # STPN's import-time write is undone


@pytest.fixture
def marker(tmp_path: Path):  # noqa: ANN201
    """The file a malicious pickle creates if it ever runs; it must never appear."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickle in the data ran code"


@pytest.mark.parametrize(("name", "files", "layout"), [("cola", COLA_FILES, "cola"), ("wtalc", WTALC_FILES, "wtalc"),
                                                       ("stpn", STPN_FILES, "acmnet")])
def test_upstream_mode_never_runs_a_pickle_from_the_data(name: str, files: dict[str, str], layout: str,
                                                         tmp_path: Path, marker: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ftcl_plugin.data.synthetic import generate
    from integrations.common.runner import main

    data = generate(tmp_path / "data", layout=layout, num_classes=3, num_train=8, num_test=6, feature_dim=16,
                    max_length=40)
    if name == "cola":  # a training feature file: the upstream's NpyFeature reads it with np.load
        video = (data / "split_train.txt").read_text().split()[0]
        evil = write_malicious(data / "features" / "train" / "rgb" / f"{video}.npy", marker)
        expected = rf"{re.escape(str(evil))} holds pickled data, which the cola session does not unpickle"
    elif name == "wtalc":  # labels_all.npy: only W-TALC's own Dataset reads it, as a pickled object array
        evil = data / "Thumos14reduced-Annotations" / "labels_all.npy"
        write_malicious(evil, marker, also=[["x"]] * 13)
        expected = (rf"The wtalc upstream's file {re.escape(str(evil))} holds a pickle that asks for the global "
                    rf"`{os.system.__module__}\.system`; it was refused")
    else:  # STPN's driver reads the training features with our loader to write the reproduction's layout
        video = (data / "split_train.txt").read_text().split()[0]
        evil = write_malicious(data / "train" / f"{video}.npy", marker)
        expected = rf"Feature file {re.escape(str(evil))} holds a pickled object array, which is not read here"
    checkout = _write(tmp_path / name, files)
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match=expected):
        main(name, ["--upstream", str(checkout), "--data", str(data), "--iterations", "2", "--out",
                    str(tmp_path / "run"), "--no-plot", "--set", "optim.batch_size=4"])


def test_wtalc_upstream_reads_its_own_pickled_files_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # W-TALC's files as W-TALC ships them: protocol-2 pickles naming numpy.core.multiarray (numpy 1.x paths).
    from ftcl_plugin.data import load_npy
    from ftcl_plugin.data.synthetic import generate
    from integrations.common.runner import main

    data = generate(tmp_path / "data", layout="wtalc", num_classes=3, num_train=8, num_test=6, feature_dim=16,
                    max_length=40)
    for path in [data / "Thumos14reduced-I3D-JOINTFeatures.npy",
                 *(data / "Thumos14reduced-Annotations").glob("labels*.npy"),
                 data / "Thumos14reduced-Annotations" / "segments.npy"]:
        old = write_object_npy(path, list(load_npy(path, allow_objects=True)), protocol=2).read_bytes()
        path.write_bytes(old.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
        assert b"cnumpy.core.multiarray\n" in path.read_bytes()
    monkeypatch.setenv(_common.ALLOW_UNSUPPORTED_ENV, "1")
    out = tmp_path / "run"
    assert main("wtalc", ["--upstream", str(_write(tmp_path / "wtalc", WTALC_FILES)), "--data", str(data),
                          "--iterations", "2", "--out", str(out), "--no-plot", "--set", "optim.batch_size=4"]) == 0
    assert json.loads((out / "upstream.json").read_text())["steps"] == 2
