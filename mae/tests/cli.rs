//! The `mae` command as a user meets it: refusals before any work, SIGKILL and Ctrl-C during
//! training, and clear errors for bad files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use engine::Device;
use mae::checkpoint::{CheckpointDir, MODEL_FILE, load_model};

fn mae() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mae"));
    c.env("MAE_DEVICE", "cpu");
    // `mae probe` keeps the baselines' scores in a cache: the tests' own, never the user's.
    c.env("MAE_CACHE_DIR", cache_dir());
    c
}

fn cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("mae-cli-cache-{}", std::process::id()))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mae-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(args: &[&str]) -> Output {
    mae().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny, fast training run that saves a checkpoint after every step.
fn small_run(out: &Path, steps: &str) -> Vec<String> {
    [
        "train",
        "--data",
        "builtin:512",
        "--model",
        "mae_vit_nano_patch4_16",
        "--batch",
        "32",
        "--steps",
        steps,
        "--checkpoint-every",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn wait_for_checkpoint(out: &Path, child: &mut Child, at_least: u64) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(d) = CheckpointDir::new(out).latest() {
            let step: u64 = d.file_name().unwrap().to_string_lossy()["step-".len()..].parse().unwrap();
            if step >= at_least {
                return step;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "training ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn impossible_settings_are_refused_before_any_work() {
    let out = scratch("refused");
    for (args, hint) in [
        (vec!["--batch", "0"], "positive batch"),
        (vec!["--mask-ratio", "1"], "outside [0, 1)"),
        (vec!["--mask-ratio", "-0.5"], "outside [0, 1)"),
        (vec!["--patch-size", "5"], "does not divide the image size 32"),
        (vec!["--heads", "3"], "heads do not divide"),
        (vec!["--model", "vit_giant"], "choose one of"),
        (vec!["--mask-strategy", "spiral"], "[possible values: random, block, grid]"),
        (vec!["--data", "nowhere-at-all"], "unknown data source"),
    ] {
        let mut full = vec!["train", "--out", out.to_str().unwrap()];
        full.extend(args.iter().copied());
        let o = run(&full);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(stderr(&o).contains(hint), "{args:?}: {}", stderr(&o));
        assert!(!out.exists(), "{args:?} did work before refusing");
    }
}

#[test]
fn missing_and_empty_data_folders_are_clear_errors() {
    let empty = scratch("empty-data");
    std::fs::create_dir_all(&empty).unwrap();
    let out = scratch("empty-out");
    let o = run(&[
        "train",
        "--data",
        &format!("folder:{}", empty.display()),
        "--steps",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&empty.display().to_string()), "{}", stderr(&o));
    let o = run(&["train", "--data", "folder:/no/such/folder", "--steps", "1", "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/no/such/folder"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(empty);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn sigkill_during_training_leaves_a_loadable_checkpoint_and_resume_continues() {
    let out = scratch("sigkill");
    let mut last = 0;
    // Checkpoints are written after every step, so some of these kills land in the middle of a
    // save; whatever the moment, the newest complete checkpoint must load and resume.
    for round in 0..3 {
        let mut args = small_run(&out, "100000");
        if round > 0 {
            args.push("--resume".into());
        }
        let mut child = mae().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        last = wait_for_checkpoint(&out, &mut child, last + 2);
        std::thread::sleep(Duration::from_millis(37 * (round + 1)));
        child.kill().unwrap();
        child.wait().unwrap();
        let latest = CheckpointDir::new(&out).latest().expect("a checkpoint survives SIGKILL");
        load_model(&latest.join(MODEL_FILE), None, &Device::Cpu).expect("and it loads");
    }
    let latest = CheckpointDir::new(&out).latest().unwrap();
    let step: u64 = latest.file_name().unwrap().to_string_lossy()["step-".len()..].parse().unwrap();
    let mut args = small_run(&out, &(step + 3).to_string());
    args.push("--resume".into());
    let o = mae().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("step {}", step + 3)), "{}", stderr(&o));
    std::fs::remove_dir_all(out).unwrap();
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_cleanly() {
    let out = scratch("ctrlc");
    let mut child = mae().args(small_run(&out, "100000")).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    wait_for_checkpoint(&out, &mut child, 2);
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("checkpoint saved"), "{err}");
    // The checkpoint holds the last finished step: the log's last row.
    let log = mae::train::read_log(&out.join("log.csv")).unwrap();
    let latest = CheckpointDir::new(&out).latest().unwrap();
    assert!(latest.ends_with(format!("step-{:08}", log.last().unwrap().0)), "{}", latest.display());
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn ctrl_c_stops_a_study_with_its_run_checkpointed_and_the_same_command_continues_it() {
    let out = scratch("study-ctrlc");
    let run_dir = out.join("runs").join("norm-pix-random-r0.75");
    // One budget for both commands: the study refuses to continue its runs under another (see
    // settings.txt). 4000 steps of the nano model take seconds, long enough to interrupt.
    let study = || {
        let mut c = mae();
        c.args(["study", "--data", "builtin:256", "--model", "mae_vit_nano_patch4_16", "--ratios", "0.75"])
            .args(["--strategies", "random", "--targets", "norm-pix", "--batch", "16", "--probe-epochs", "1"])
            .args(["--steps-per-run", "4000", "--out", out.to_str().unwrap()])
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        c
    };
    let mut child = study().spawn().unwrap();
    let start = Instant::now();
    while mae::train::read_log(&run_dir.join("log.csv")).map_or(0, |l| l.len()) < 3 {
        assert!(child.try_wait().unwrap().is_none(), "the study ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "the study's run never logged a step");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("the same command continues it"), "{}", stderr(&o));
    let log = mae::train::read_log(&run_dir.join("log.csv")).unwrap();
    let stopped_at = log.last().unwrap().0;
    let latest = CheckpointDir::new(&run_dir).latest().unwrap();
    assert!(latest.ends_with(format!("step-{stopped_at:08}")), "{}", latest.display());
    assert!(stopped_at < 4000, "the run finished before it was interrupted");
    // Started again, the same command continues the run, not a new one.
    let o = study().output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = mae::train::read_log(&run_dir.join("log.csv")).unwrap();
    assert_eq!(log.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=4000).collect::<Vec<_>>());
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_corrupt_checkpoint_is_a_clear_error_that_names_the_file() {
    let dir = scratch("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.safetensors");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": garbage}  ").unwrap();
    let o = run(&["reconstruct", "--checkpoint", path.to_str().unwrap(), "--out", dir.join("r.png").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("broken.safetensors"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_finished_run_can_be_reconstructed_embedded_and_probed() {
    let out = scratch("tools");
    let o = mae().args(small_run(&out, "3")).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let png = out.join("again.png");
    let o =
        run(&["reconstruct", "--checkpoint", out.to_str().unwrap(), "--count", "3", "--out", png.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(png.is_file());
    let npy = out.join("features.npy");
    let o = run(&["embed", "--checkpoint", out.to_str().unwrap(), "--split", "test", "--out", npy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (shape, _) = mae::io::npy::read_npy_f32(&npy).unwrap();
    assert_eq!(shape[1], 2 * 32, "cls and mean features of the 32-wide nano encoder");
    assert!(out.join("features.labels.npy").is_file());
    let probe = ["probe", "--checkpoint", out.to_str().unwrap(), "--epochs", "1", "--train-limit", "300"];
    let o = run(&probe);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(table.contains("raw pixels") && table.contains("random-init encoder"), "{table}");
    let o = run(&["probe", "--checkpoint", out.to_str().unwrap(), "--train-limit", "300", "--knn-protocols"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let knn = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(knn.lines().filter(|l| l.ends_with("% |")).count(), 5, "one row per protocol: {knn}");
    assert!(knn.contains("the probe's") && knn.contains("standardised, k 10"), "{knn}");
    // The baselines were kept in the cache; a second probe reads them back (here, a doctored
    // score: 50%), and --fresh-baselines probes them again, giving the first probe's table.
    let cache = cache_dir().join("baselines.csv");
    let text = std::fs::read_to_string(&cache).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    let doctored: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix("raw pixels,") {
            Some(rest) => {
                let f: Vec<&str> = rest.split(',').collect();
                format!("raw pixels,{},0.5,{},{}", f[0], f[2], f[3])
            }
            None => l.to_string(),
        })
        .collect();
    std::fs::write(&cache, doctored.join("\n") + "\n").unwrap();
    let o = run(&probe);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(again.lines().any(|l| l.starts_with("| raw pixels | 50.00% |")), "{again}");
    let o = run(&[&probe[..], &["--fresh-baselines"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), table);
    std::fs::remove_dir_all(out).unwrap();
    let _ = std::fs::remove_dir_all(cache_dir());
}

#[test]
fn a_resume_takes_the_runs_settings_from_its_checkpoint_and_refuses_only_contradicting_flags() {
    let out = scratch("resume-settings");
    let o = out.to_str().unwrap();
    // A run with flags far from the defaults.
    let mut first = small_run(&out, "2");
    let flags = [
        "--seed",
        "7",
        "--base-lr",
        "2e-3",
        "--mask-ratio",
        "0.5",
        "--crop-min-scale",
        "0.5",
        "--no-augment",
        "--train-limit",
        "300",
        "--matmul-precision",
        "f32",
    ];
    first.extend(flags.map(String::from));
    let r = mae().args(&first).output().unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    // Only the folder, --resume and a longer budget: it continues with the run's own settings.
    let r = run(&["train", "--out", o, "--resume", "--steps", "4", "--checkpoint-every", "0"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let log = mae::train::read_log(&out.join("log.csv")).unwrap();
    assert_eq!(log.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // The same setting given again is fine; a different one is refused, naming both.
    let r = run(&["train", "--out", o, "--resume", "--steps", "5", "--seed", "7", "--batch", "32"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let r = run(&["train", "--out", o, "--resume", "--steps", "6", "--batch", "64"]);
    assert!(!r.status.success());
    let e = stderr(&r);
    assert!(e.contains("--batch 64") && e.contains("mae.batch_size = 32"), "{e}");
    let r = run(&["train", "--out", o, "--resume", "--steps", "6", "--model", "mae_vit_micro_patch4_32"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("--model contradicts"), "{}", stderr(&r));
    let r = run(&["train", "--out", o, "--resume", "--steps", "6", "--crop-min-scale", "0.3"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("mae.crop_min_scale = 0.5"), "{}", stderr(&r));
    let r = run(&["train", "--out", o, "--resume", "--steps", "6", "--train-limit", "200"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("mae.train_limit = 300"), "{}", stderr(&r));
    // The products' precision is the run's too: f32 here, kept without the flag, bf16 refused.
    let state = mae::checkpoint::read_checkpoint_metadata(
        &mae::checkpoint::CheckpointDir::new(&out).latest().unwrap().join(mae::checkpoint::TRAIN_STATE_FILE),
    )
    .unwrap();
    assert_eq!(state.get("mae.matmul_precision").map(String::as_str), Some("f32"));
    let r = run(&["train", "--out", o, "--resume", "--steps", "6", "--matmul-precision", "bf16"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("mae.matmul_precision = f32"), "{}", stderr(&r));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_training_defaults_come_from_the_recipe_and_the_help_says_which() {
    let help = run(&["train", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--recipe") && text.contains("64 (tuned, mae_vit_micro_patch4_28), 256 (paper"), "{text}");
    let info = run(&["info", "--device", "cpu"]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("mae_vit_micro_patch4_28    tuned: batch 64"), "{text}");
    assert!(text.contains("mae_vit_base_patch16       paper: batch 256, base lr 1.5e-4"), "{text}");
    // The recipe in force is said at the start of a run; a flag overrides one setting of it.
    let out = scratch("recipe");
    let mut args = small_run(&out, "1");
    args.extend(["--recipe", "paper"].map(String::from));
    let r = mae().args(&args).output().unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stderr(&r).contains("recipe paper: batch 256, base lr 1.5e-4"), "{}", stderr(&r));
    let _ = std::fs::remove_dir_all(&out);
    // Shape flags rename the model; the recipe is still the chosen preset's.
    if !std::path::Path::new(mae::data::idx::FASHION_MNIST_DIR).is_dir() {
        eprintln!("SKIPPED (part): Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let o = out.to_str().unwrap();
    let decoder_of_the_run = || {
        let model = mae::checkpoint::CheckpointDir::new(&out).latest().unwrap().join(mae::checkpoint::MODEL_FILE);
        let meta = mae::checkpoint::read_checkpoint_metadata(&model).unwrap();
        let c = mae::config::ModelConfig::from_metadata(&meta[mae::checkpoint::META_CONFIG]).unwrap();
        (c.decoder_depth, c.name)
    };
    let r = run(&["train", "--data", "fashion-mnist", "--decoder-depth", "2", "--steps", "1", "--out", o]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stderr(&r).contains("recipe tuned: batch 64"), "{}", stderr(&r));
    assert_eq!(decoder_of_the_run(), (2, "mae_vit_d128x6h4_dec64x2h4_patch4_28px1c".to_string()));
    let _ = std::fs::remove_dir_all(&out);
    // Without the flag, the tuned recipe's one-block decoder, named so.
    let r = run(&["train", "--data", "fashion-mnist", "--steps", "1", "--out", o]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stderr(&r).contains("decoder depth 1"), "{}", stderr(&r));
    assert_eq!(decoder_of_the_run(), (1, "mae_vit_micro_patch4_28_dec1".to_string()));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn finetuning_a_random_encoder_is_the_supervised_baseline_and_needs_a_preset() {
    let scratch = ["finetune", "--checkpoint", "random", "--model", "mae_vit_nano_patch4_16", "--data", "builtin:128"];
    let r = run(&scratch);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(String::from_utf8_lossy(&r.stdout).contains("test accuracy"));
    // From scratch there is nothing for layer decay to keep: none, unless the flag asks.
    assert!(stderr(&r).contains("layer decay 1 "), "{}", stderr(&r));
    let r = run(&[&scratch[..], &["--layer-decay", "0.75", "--epochs", "0.5"]].concat());
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stderr(&r).contains("layer decay 0.75 "), "{}", stderr(&r));
    let r = run(&["finetune", "--checkpoint", "random", "--data", "builtin:128"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("--checkpoint random needs --model"), "{}", stderr(&r));
}

#[test]
#[cfg(feature = "gpu")]
fn finetuning_on_the_gpu_with_packed_encoder_and_head_follows_the_cpu() {
    if engine::gpu::test_device().is_none() {
        return;
    }
    let line = |device: &str| {
        let r = run(&[
            "finetune",
            "--checkpoint",
            "random",
            "--model",
            "mae_vit_nano_patch4_16",
            "--data",
            "builtin:128",
            "--epochs",
            "2",
            "--batch",
            "32",
            "--device",
            device,
        ]);
        assert!(r.status.success(), "{}", stderr(&r));
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        let loss = out.rsplit("final training loss ").next().unwrap().trim_end_matches(|c: char| !c.is_ascii_digit());
        let accuracy = out.split("test accuracy ").nth(1).unwrap().split('%').next().unwrap().to_string();
        (accuracy, loss.parse::<f32>().unwrap())
    };
    let (cpu, gpu) = (line("cpu"), line("gpu"));
    assert_eq!(cpu.0, gpu.0, "test accuracy");
    assert!((cpu.1 - gpu.1).abs() < 1e-3, "final training loss: cpu {} gpu {}", cpu.1, gpu.1);
}
