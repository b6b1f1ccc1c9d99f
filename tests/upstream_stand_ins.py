"""Stand-in checkouts of the four upstreams for the patch tests (CI has no upstream code).

Each has the pinned commit's file names, module names, class and function names and signatures (as
docs/baselines.md describes them) and the behaviour the patches work around, with trivial bodies written for these
tests: ACM-Net's and CoLA's evaluators hand tasks that use ``np.float`` to ``joblib.Parallel(n_jobs>1)``, CoLA calls
``.cuda()``, W-TALC sets a CUDA default tensor type at import and reads pickled annotation arrays and cwd-relative
paths, STPN parses the command line at import.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

__all__ = ["ACMNET_FILES", "COLA_FILES", "STPN_FILES", "WTALC_FILES", "write_checkout"]

# --------------------------------------------------------------------------------------------------------------
# An ACM-Net-shaped stand-in checkout (same file names, module names, classes and signatures as ispc-lab/ACM-Net
# @4d38dc6; bodies are minimal).

ACMNET_FILES = {
    "config/__init__.py": "",
    "config/model_config.py": """
        import argparse
        import numpy as np

        def build_args(dataset=None):
            parser = argparse.ArgumentParser()
            parser.add_argument("--batch_size", default=16, type=int)
            parser.add_argument("--epochs", default=1000, type=int)
            parser.add_argument("--num_workers", default=6, type=int)
            parser.add_argument("--without_wandb", action="store_true")
            args = parser.parse_args()
            args.dataset = dataset or "THUMOS"
            args.lr, args.weight_decay = 1e-4, 5e-5
            args.loss_lamb_1, args.loss_lamb_2, args.loss_lamb_3 = 2e-3, 5e-5, 2e-4
            args.feature_dim, args.action_cls_num, args.class_name_lst = 2048, 20, []
            args.tiou_thresholds = np.arange(0.1, 1.0, 0.1)
            args.sample_segments_num = 750
            return args
    """,
    "model/__init__.py": "",
    "model/ACMNet.py": """
        import torch
        from torch import nn

        class ACMNet(nn.Module):
            def __init__(self, args):
                super().__init__()
                d, c = args.feature_dim, args.action_cls_num
                self.feature_embedding = nn.Sequential(nn.Conv1d(d, d, 3, padding=1), nn.ReLU())
                self.att_branch = nn.Conv1d(d, 3, 1)
                self.snippet_cls = nn.Linear(d, c + 1)

            def forward(self, input_features):
                emb = self.feature_embedding(input_features.permute(0, 2, 1))
                att = torch.softmax(self.att_branch(emb).permute(0, 2, 1), dim=2)
                emb = emb.permute(0, 2, 1)
                cas = self.snippet_cls(emb)
                inst = cas * att[:, :, :1]
                k = max(inst.shape[1] // 8, 1)
                cls = torch.softmax(inst.topk(k, dim=1).values.mean(1), dim=1)
                feat = emb.mean(1)
                p = torch.softmax(inst, dim=2)
                return cls, cls, cls, feat, feat, feat, att, p, torch.softmax(cas, 2), p, p
    """,
    "utils/__init__.py": "",
    "utils/net_utils.py": """
        import random
        import numpy as np
        import torch
        from torch import nn

        def set_random_seed(seed=0):
            random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)

        class ACMLoss(nn.Module):
            def __init__(self, lamb1=2e-3, lamb2=5e-5, lamb3=2e-4, dataset="THUMOS14"):
                super().__init__()

            def forward(self, act_inst_cls, act_cont_cls, act_back_cls, vid_label, temp_att=None,
                        act_inst_feat=None, act_cont_feat=None, act_back_feat=None, temp_cas=None):
                label = torch.hstack((vid_label, torch.zeros_like(vid_label[:, :1])))
                label = label / label.sum(1, keepdim=True)
                loss = -(torch.log(act_inst_cls) * label).sum(1).mean()
                return loss, {"act_inst_loss": loss.item()}
    """,
    "utils/net_evaluation.py": """
        import numpy as np
        from joblib import Parallel, delayed
        np.int(3)  # the removed alias, as the upstream uses it at import

        def compute_average_precision_detection(scores):
            return float(np.mean(np.array(scores, dtype=np.float)))  # the alias again, inside each task

        def wrapper_compute_average_precision(per_class):
            # As ANETDetection.wrapper_compute_average_precision: one joblib task per class, n_jobs=10. With joblib
            # installed, worker processes would run the tasks without the session's aliases.
            return Parallel(n_jobs=10)(delayed(compute_average_precision_detection)(s) for s in per_class)
    """,
    "dataset/__init__.py": "",
    "dataset/dataset_class.py": """
        import json, os
        import numpy as np
        import torch
        from torch.utils.data import Dataset

        class ACMDataset(Dataset):
            def __init__(self, args, phase="train", sample="random"):
                self.phase, self.root = phase, args.data_dir
                with open(os.path.join(self.root, "gt.json")) as f:
                    self.gt = json.load(f)["database"]
                with open(os.path.join(self.root, f"split_{phase}.txt")) as f:
                    self.videos = [line.strip() for line in f if line.strip()]
                self.index = {name: i for i, name in enumerate(args.class_name_lst)}
                self.num_classes = args.action_cls_num

            def __len__(self):
                return len(self.videos)

            def __getitem__(self, i):
                name = self.videos[i]
                x = np.load(os.path.join(self.root, self.phase, name + ".npy"))[:24].astype(np.float32)
                x = np.concatenate([x, np.repeat(x[-1:], 24 - len(x), 0)]) if len(x) < 24 else x
                y = np.zeros(self.num_classes, dtype=np.float32)
                for ann in self.gt[name]["annotations"]:
                    y[self.index[ann["label"]]] = 1
                if self.phase == "train":
                    return torch.from_numpy(x), torch.from_numpy(y)
                return name, torch.from_numpy(x), torch.from_numpy(y), len(x), self.gt[name]["duration"]

        def build_dataset(args, phase="train", sample="random"):
            return ACMDataset(args, phase, sample)
    """,
    "main_thu.py": """
        import numpy as np
        import torch
        import wandb
        from tqdm import tqdm
        from config.model_config import build_args
        from dataset.dataset_class import build_dataset
        from model.ACMNet import ACMNet
        from utils.net_utils import set_random_seed, ACMLoss
        import utils.net_evaluation

        def train(args, model, dataloader, criterion, optimizer):
            model.train()
            losses = []
            for x, y in tqdm(dataloader):
                out = model(x.to(args.device))
                loss, parts = criterion(out[0], out[1], out[2], y.to(args.device), out[6], out[3], out[4], out[5],
                                        out[7])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            return {"train_loss": float(np.mean(losses))}

        def test(args, model, dataloader, criterion, phase="test"):
            model.eval()
            for name, x, y, length, duration in dataloader:
                model(x.to(args.device))
            per_class = utils.net_evaluation.wrapper_compute_average_precision([[0.25, 0.25], [0.25]])
            return {"test_mAP": float(np.mean(per_class)), "test_acc": 0.5}, {}
    """,
}

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


def write_checkout(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root
