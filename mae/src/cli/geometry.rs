//! `mae geometry`: the test features of one or more encoders, and of the raw pixels, on their
//! first two principal components, coloured by class, side by side in one picture, with how well
//! the classes separate (k-NN accuracy, Fisher ratio) in each panel's title and in a table.

use std::path::{Path, PathBuf};

use clap::Args;
use mae::classifiers::standardize;
use mae::eval::geometry::{Geometry, class_names, geometry, geometry_picture, geometry_table};
use mae::probe::{ProbeData, encoder_features, pixel_features};
use mae::{Error, Result};

use super::common::{DeviceArgs, FeatureArgs, device, is_random_init, load, print_and_save};

#[derive(Args)]
pub struct GeometryArgs {
    /// An encoder to draw: a model .safetensors file, a checkpoint folder, a training run's
    /// folder, or `random` (a fresh model of --model, on --data). Repeat it for panels side by side.
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    /// The panels' names, comma-separated, one per --checkpoint in their order (default: the
    /// name of each checkpoint's file or folder).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// The images (default: the data the models were trained on, as their checkpoints record it).
    #[arg(long)]
    data: Option<String>,
    /// The preset, for weights without our metadata (official ones) and for `random`.
    #[arg(long)]
    model: Option<String>,
    /// Leave out the raw-pixels panel (drawn after the encoders' by default).
    #[arg(long)]
    no_pixels: bool,
    #[command(flatten)]
    features: FeatureArgs,
    /// Standardise each feature dimension with the training split's mean and deviation first (as
    /// the linear probe sees the features); by default they are used as extracted.
    #[arg(long)]
    standardize: bool,
    /// Use only the first N training images as the k-NN's memory (quicker).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Draw and measure only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// The side of each square panel, in pixels.
    #[arg(long, default_value_t = 420)]
    panel_size: u32,
    /// The picture (PNG).
    #[arg(long, default_value = "geometry.png")]
    out: PathBuf,
    /// Also write the table here (markdown).
    #[arg(long)]
    table: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The smallest `--panel-size` that leaves room for a plot under the title.
const MIN_PANEL_SIZE: u32 = 160;

/// Runs `mae geometry`.
pub fn run(a: GeometryArgs) -> Result<()> {
    if !a.labels.is_empty() && a.labels.len() != a.checkpoint.len() {
        return Err(Error::Config(format!(
            "--labels names {} panels but there are {} --checkpoint: give one name per checkpoint, in their order",
            a.labels.len(),
            a.checkpoint.len()
        )));
    }
    if a.panel_size < MIN_PANEL_SIZE {
        return Err(Error::Config(format!(
            "--panel-size {} leaves no room for the plot: use at least {MIN_PANEL_SIZE}",
            a.panel_size
        )));
    }
    if a.test_limit.is_some_and(|n| n < 2) {
        return Err(Error::Config("--test-limit must keep at least 2 test images".into()));
    }
    let spec = a.features.spec();
    let dev = device(&a.device)?;
    let mut rows: Vec<Geometry> = Vec::new();
    // The data of the first checkpoint: every other must agree, and the pixels panel uses it.
    let mut first: Option<(String, ProbeData, usize)> = None;
    for (i, path) in a.checkpoint.iter().enumerate() {
        let l = load(path, a.model.as_deref(), a.data.as_deref(), &dev)?;
        let source = l.data.to_string();
        if let Some((seen, _, _)) = &first
            && *seen != source
        {
            return Err(Error::Config(format!(
                "{} was trained on {source} but the first checkpoint on {seen}: pass --data to draw both on the same images",
                path.display()
            )));
        }
        let mut data = ProbeData::load(&l.data, &l.model.config, l.norm, a.train_limit, 0)?;
        if let Some(n) = a.test_limit.filter(|&n| n < data.test.len()) {
            data.test = data.test.take(n);
        }
        let name = a.labels.get(i).cloned().unwrap_or_else(|| panel_name(path));
        eprintln!("{name}: features of {} training and {} test images of {source}", data.train.len(), data.test.len());
        let (mut train, mut test) = encoder_features(&l.model, &data, spec)?;
        if a.standardize {
            standardize(&mut train, &mut test);
        }
        rows.push(geometry(&name, &train, &test, data.classes, &dev)?);
        if first.is_none() {
            first = Some((source, data, l.model.config.img_size));
        }
    }
    let (source, data, img_size) = first.expect("clap asks for at least one --checkpoint");
    if !a.no_pixels {
        let (mut train, mut test) = pixel_features(&data, img_size)?;
        if a.standardize {
            standardize(&mut train, &mut test);
        }
        rows.push(geometry("raw pixels", &train, &test, data.classes, &dev)?);
    }
    for g in rows.iter().filter(|g| !g.pca_converged) {
        eprintln!("note: {}: PC1 and PC2 did not converge to tolerance (their variances are nearly tied)", g.name);
    }
    let caption = format!(
        "{} test images of {source} on each feature set's PC1 and PC2 (features: {spec}{}); k-NN: k=20 against {} \
         training images",
        data.test.len(),
        if a.standardize { ", standardised" } else { "" },
        data.train.len()
    );
    let img = geometry_picture(&rows, &caption, &class_names(&data), a.panel_size);
    mae::io::png::save_png(&a.out, &img)?;
    eprintln!("picture: {} ({}x{})", a.out.display(), img.width(), img.height());
    print_and_save(&geometry_table(&rows), a.table.as_deref())
}

/// A panel's default name: `random-init encoder`, or the checkpoint's file or folder name.
fn panel_name(path: &Path) -> String {
    if is_random_init(path) {
        return "random-init encoder".into();
    }
    let name = if path.extension().is_some_and(|e| e == "safetensors") { path.file_stem() } else { path.file_name() };
    name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
