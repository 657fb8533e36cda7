//! ImageSet selection and statistics, and Normalization's text form for checkpoints.

use mae::data::image_set::{FASHION_MNIST_MEAN, FASHION_MNIST_STD, ImageSet, Normalization};

/// Four 2-channel 1x2 images: channel 0 holds 0 and 255, channel 1 the image's index.
fn set() -> ImageSet {
    let pixels = (0..4u8).flat_map(|i| [0, 255, i, i]).collect();
    ImageSet {
        name: "tiny".into(),
        channels: 2,
        height: 1,
        width: 2,
        pixels,
        labels: Some(vec![3, 1, 0, 2]),
        classes: ["a", "b", "c", "d"].map(String::from).to_vec(),
    }
}

#[test]
fn subset_and_take_keep_images_and_labels_together() {
    let s = set();
    assert_eq!((s.len(), s.image_len()), (4, 4));
    let sub = s.subset(&[2, 0, 2]);
    assert_eq!(sub.len(), 3);
    assert_eq!(sub.image(0), &[0, 255, 2, 2]);
    assert_eq!(sub.image(1), &[0, 255, 0, 0]);
    assert_eq!(sub.labels, Some(vec![0, 3, 0]));
    assert_eq!(sub.classes, s.classes);
    assert_eq!(s.take(2).labels, Some(vec![3, 1]));
    assert_eq!(s.take(10), s);
    assert!(s.take(0).is_empty());
}

#[test]
fn channel_stats_are_the_exact_population_mean_and_std_per_channel() {
    let n = set().channel_stats();
    assert!((n.mean[0] - 0.5).abs() < 1e-7 && (n.std[0] - 0.5).abs() < 1e-7, "{n}");
    // Channel 1: values 0, 1, 2, 3 (each twice), over 255.
    let (m, v) = (1.5f64 / 255.0, 1.25f64 / (255.0 * 255.0));
    assert!((n.mean[1] as f64 - m).abs() < 1e-7 && (n.std[1] as f64 - v.sqrt()).abs() < 1e-7, "{n}");
    // A constant channel gets one grey level as its std, so normalising stays finite.
    let flat = ImageSet { pixels: vec![9; 8], ..set() };
    assert_eq!(flat.channel_stats().std, [1.0 / 255.0; 2]);
}

#[test]
fn normalization_text_round_trips_exactly() {
    for n in
        [Normalization::fashion_mnist(), Normalization::imagenet(), set().channel_stats(), Normalization::identity(2)]
    {
        let text = n.to_string();
        assert_eq!(text.parse::<Normalization>().unwrap(), n, "{text}");
    }
    assert_eq!(Normalization::fashion_mnist().to_string(), "mean=0.286;std=0.353");
    assert_eq!(Normalization::imagenet().to_string(), "mean=0.485,0.456,0.406;std=0.229,0.224,0.225");
    assert_eq!((FASHION_MNIST_MEAN, FASHION_MNIST_STD), ([0.2860], [0.3530]));
}

#[test]
fn malformed_normalization_text_is_a_clear_error() {
    for bad in [
        "",
        "mean=0.5",
        "mean=0.5;sd=0.2",
        "mean=x;std=0.2",
        "mean=0.5,0.4;std=0.2",
        "mean=0.5;std=0",
        "mean=0.5;std=-1",
    ] {
        let msg = bad.parse::<Normalization>().unwrap_err().to_string();
        assert!(msg.contains("mean=0.286;std=0.353"), "{bad:?}: {msg}");
    }
    let msg = Normalization::imagenet().check_channels(1, "fashion-mnist/test").unwrap_err().to_string();
    assert!(msg.contains("3 channel") && msg.contains("fashion-mnist/test"), "{msg}");
    assert!(Normalization::new(vec![0.5], vec![f32::NAN]).is_err());
}

#[test]
fn denormalize_inverts_normalize_for_every_byte() {
    let n = Normalization::imagenet();
    for c in 0..3 {
        for v in 0..=255u8 {
            assert_eq!(n.denormalize(c, n.normalize(c, v)), v);
        }
    }
}
