//! Thumbnails of attached images: a small JPEG made on the device that
//! adds the photo, kept in the attachment's metadata so it syncs with the
//! record and a list can show the picture before the file arrives.

use base64::Engine;
use image::{ImageDecoder, ImageReader, Limits};
use std::io::Cursor;

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 128;
/// The largest thumbnail kept, in bytes of JPEG; a picture that cannot be
/// made this small at the lowest quality tried gets none.
pub const MAX_THUMBNAIL_BYTES: usize = 8 * 1024;
/// JPEG qualities tried in turn until the thumbnail fits.
const QUALITIES: [u8; 3] = [70, 50, 30];
/// A picture larger than this is not decoded (a hostile file may claim
/// any size): 50 megapixels, in memory at most 256 MiB.
const MAX_SIDE: u32 = 12_000;
const MAX_DECODE_BYTES: u64 = 256 << 20;

/// The thumbnail of `bytes` of `media_type`, as base64 of a JPEG, if the
/// type is one the device can read and the picture decodes.
pub fn make(media_type: &str, bytes: &[u8]) -> Option<String> {
    if !matches!(media_type, "image/jpeg" | "image/png" | "image/webp") {
        return None;
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().ok()?;
    // Phones store a photo sideways and say how to turn it.
    let orientation = decoder.orientation().ok();
    let mut picture = image::DynamicImage::from_decoder(decoder).ok()?;
    if let Some(o) = orientation {
        picture.apply_orientation(o);
    }
    let small = picture
        .thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
        .into_rgb8();
    QUALITIES.iter().find_map(|&quality| {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality)
            .encode_image(&small)
            .ok()?;
        (jpeg.len() <= MAX_THUMBNAIL_BYTES)
            .then(|| base64::engine::general_purpose::STANDARD.encode(&jpeg))
    })
}

/// The JPEG bytes of a stored thumbnail, if it is one.
pub fn decode(stored: &str) -> Option<Vec<u8>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .ok()?;
    (bytes.len() <= MAX_THUMBNAIL_BYTES
        && infer::get(&bytes).map(|t| t.mime_type()) == Some("image/jpeg"))
    .then_some(bytes)
}

/// A photo-like picture for tests: a gradient with noise, as a camera
/// makes (flat colours would compress to nothing).
#[cfg(test)]
pub(crate) fn sample_photo(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let mut seed = 7u32;
    let picture = image::RgbImage::from_fn(width, height, |x, y| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let noise = (seed >> 24) as u8 / 4;
        image::Rgb([
            (x * 255 / width) as u8 ^ noise,
            (y * 255 / height) as u8,
            noise,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    picture.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_get_a_small_jpeg_thumbnail_of_their_shape() {
        for format in [image::ImageFormat::Jpeg, image::ImageFormat::Png] {
            let bytes = sample_photo(1600, 1200, format);
            let media_type = format.to_mime_type();
            let stored = make(media_type, &bytes).expect("a thumbnail");
            let jpeg = decode(&stored).expect("a JPEG");
            assert!(jpeg.len() <= MAX_THUMBNAIL_BYTES, "{}", jpeg.len());
            let thumb = image::load_from_memory(&jpeg).unwrap();
            assert_eq!((thumb.width(), thumb.height()), (128, 96), "{media_type}");
        }
    }

    #[test]
    fn files_that_are_not_readable_pictures_get_none() {
        assert_eq!(make("application/pdf", b"%PDF-1.4"), None);
        assert_eq!(make("image/heic", b"anything"), None);
        // Declared a JPEG, but cut short or not a picture at all.
        let jpeg = sample_photo(64, 64, image::ImageFormat::Jpeg);
        assert_eq!(make("image/jpeg", &jpeg[..40]), None);
        assert_eq!(make("image/jpeg", b"<html>"), None);
        // A stored thumbnail must be a small JPEG.
        assert_eq!(decode("not base64!"), None);
        let png = base64::engine::general_purpose::STANDARD.encode(sample_photo(
            8,
            8,
            image::ImageFormat::Png,
        ));
        assert_eq!(decode(&png), None);
    }
}
