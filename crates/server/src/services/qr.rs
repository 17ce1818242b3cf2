//! QR codes of tracking links, for print and video where a link cannot be
//! clicked (`GET /api/v1/links/{code}/qr`, and the dashboard's and the
//! portal's link builders). Encoding by the `qrcode` crate (ISO/IEC 18004),
//! PNG by the `png` crate; no I/O here.

use qrcode::{EcLevel, QrCode};

/// An image format of a QR code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrFormat {
    /// `image/svg+xml`: scales to any print size.
    Svg,
    /// `image/png`, grayscale.
    Png,
}

impl QrFormat {
    /// `svg` or `png`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "svg" => Some(Self::Svg),
            "png" => Some(Self::Png),
            _ => None,
        }
    }

    /// The `Content-Type` of the image.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Svg => "image/svg+xml",
            Self::Png => "image/png",
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Svg => "svg",
            Self::Png => "png",
        }
    }
}

/// Image side when none is asked for, px.
pub const DEFAULT_SIZE: u32 = 512;
/// Smallest image side, px.
pub const MIN_SIZE: u32 = 64;
/// Largest image side, px (a 2048 px PNG is about 30 KB).
pub const MAX_SIZE: u32 = 2048;
/// Longest URL encoded: a version 40 code at level M holds 2,331 bytes;
/// a URL that long would be hard to scan anyway.
pub const MAX_URL: usize = 2000;

/// Light modules around the code, as ISO/IEC 18004 asks.
const QUIET_ZONE: u32 = 4;

/// Why a QR code was not made.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The URL is longer than [`MAX_URL`].
    #[error("the tracking URL is {0} bytes, more than a scannable QR code holds ({MAX_URL})")]
    TooLong(usize),
    /// The encoder or the PNG writer failed.
    #[error("the QR code could not be drawn: {0}")]
    Draw(String),
}

/// The QR code of `url` (error correction M: 15% of the code may be
/// damaged or covered) as an image about `size` px square (rounded down to
/// whole px per module, never below one module per px), with its quiet
/// zone.
///
/// # Errors
/// [`QrError::TooLong`] for a URL over [`MAX_URL`] bytes.
pub fn render(url: &str, format: QrFormat, size: u32) -> Result<Vec<u8>, QrError> {
    if url.len() > MAX_URL {
        return Err(QrError::TooLong(url.len()));
    }
    let code = QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M)
        .map_err(|e| QrError::Draw(e.to_string()))?;
    let modules = u32::try_from(code.width()).map_err(|e| QrError::Draw(e.to_string()))?;
    let side = modules + 2 * QUIET_ZONE;
    let px = (size.clamp(MIN_SIZE, MAX_SIZE) / side).max(1);
    let dark: Vec<bool> = code
        .to_colors()
        .iter()
        .map(|c| *c == qrcode::Color::Dark)
        .collect();
    match format {
        QrFormat::Svg => Ok(svg(&dark, modules, px).into_bytes()),
        QrFormat::Png => png(&dark, modules, px),
    }
}

/// One path of unit squares in module coordinates, scaled by the viewBox:
/// small, and crisp at any size.
fn svg(dark: &[bool], modules: u32, px: u32) -> String {
    use std::fmt::Write;
    let side = modules + 2 * QUIET_ZONE;
    let mut path = String::with_capacity(dark.len() * 4);
    for (i, d) in dark.iter().enumerate() {
        if *d {
            let i = u32::try_from(i).unwrap_or(0);
            let (x, y) = (i % modules + QUIET_ZONE, i / modules + QUIET_ZONE);
            let _ = write!(path, "M{x} {y}h1v1h-1z");
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{w}\" \
         viewBox=\"0 0 {side} {side}\" shape-rendering=\"crispEdges\">\
         <rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>\n",
        w = side * px
    )
}

fn png(dark: &[bool], modules: u32, px: u32) -> Result<Vec<u8>, QrError> {
    let side = (modules + 2 * QUIET_ZONE) * px;
    let mut pixels = vec![255u8; (side * side) as usize];
    for (i, d) in dark.iter().enumerate() {
        if !*d {
            continue;
        }
        let i = u32::try_from(i).unwrap_or(0);
        let (mx, my) = (i % modules + QUIET_ZONE, i / modules + QUIET_ZONE);
        for y in my * px..(my + 1) * px {
            let row = (y * side) as usize;
            pixels[row + (mx * px) as usize..row + ((mx + 1) * px) as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    let draw = |e: png::EncodingError| QrError::Draw(e.to_string());
    {
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Best);
        let mut w = enc.write_header().map_err(draw)?;
        w.write_image_data(&pixels).map_err(draw)?;
    }
    Ok(out)
}

/// The text a PNG QR code holds, read back by an independent decoder
/// (`rqrr`): for tests.
#[cfg(test)]
pub fn decode_png(png: &[u8]) -> Option<String> {
    let mut r = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .ok()?;
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).ok()?;
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    grids.first()?.decode().ok().map(|(_, text)| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_png_code_reads_back_as_the_url_and_an_svg_is_square() {
        let url = "https://t.example/r/solare?src=print&sub1=flyer-7";
        let png = render(url, QrFormat::Png, 300).unwrap_or_default();
        assert_eq!(decode_png(&png).as_deref(), Some(url));
        let svg = String::from_utf8(render(url, QrFormat::Svg, 512).unwrap_or_default())
            .unwrap_or_default();
        assert!(
            svg.starts_with("<svg ") && svg.contains("viewBox=\"0 0 "),
            "{svg}"
        );
        assert!(matches!(
            render(&"x".repeat(MAX_URL + 1), QrFormat::Svg, 512),
            Err(QrError::TooLong(_))
        ));
        // The size asked is kept within bounds; modules stay whole pixels.
        for (asked, most) in [(10, 64), (300, 300), (99_999, 2048)] {
            let png = render(url, QrFormat::Png, asked).unwrap_or_default();
            let r = png::Decoder::new(std::io::Cursor::new(png)).read_info();
            let w = r.map(|r| r.info().width).unwrap_or(0);
            assert!(w > 0 && w <= most.max(41), "{asked}: {w}");
        }
    }
}
