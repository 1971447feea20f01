//! The screen renderer: one pure function from (live frame, display state) to pixels on an
//! embedded-graphics canvas. Host-testable (golden images); every hardware screen presents the
//! finished canvas.

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};
use image::RgbImage;
use u8g2_fonts::U8g2TextStyle;
use u8g2_fonts::fonts;

use crate::model::classifier::{NOT_LESION_ADVICE, Outcome};
use crate::pipeline::view::{DisplayState, SourceStatus};

/// An RGB888 drawing surface backed by an `image::RgbImage`.
pub struct Canvas(pub RgbImage);

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas(RgbImage::new(width, height))
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        let (w, h) = (self.0.width() as i32, self.0.height() as i32);
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && p.x < w && p.y < h {
                self.0
                    .put_pixel(p.x as u32, p.y as u32, image::Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Self::Error> {
        let area = area.intersection(&self.bounding_box());
        let px = image::Rgb([color.r(), color.g(), color.b()]);
        for y in area.rows() {
            for x in area.columns() {
                self.0.put_pixel(x as u32, y as u32, px);
            }
        }
        Ok(())
    }
}

/// Refer banner: white text on red, so the decision never depends on colour alone.
const REFER_BG: Rgb888 = Rgb888::new(200, 30, 40);

const BG: Rgb888 = Rgb888::new(16, 18, 24);
const FG: Rgb888 = Rgb888::WHITE;
const DIM: Rgb888 = Rgb888::new(170, 176, 190);
const WARN: Rgb888 = Rgb888::new(255, 196, 0);
const BAR_BG: Rgb888 = Rgb888::new(60, 64, 76);
const OK: Rgb888 = Rgb888::new(64, 200, 120);
const UNSURE: Rgb888 = Rgb888::new(150, 150, 160);

/// Copy `frame` scaled (aspect kept, centred) into `area`.
fn draw_frame(canvas: &mut Canvas, frame: &RgbImage, area: Rectangle) {
    let (aw, ah) = (area.size.width.max(1), area.size.height.max(1));
    let scale = (aw as f32 / frame.width() as f32).min(ah as f32 / frame.height() as f32);
    let (w, h) = (
        ((frame.width() as f32 * scale) as u32).max(1),
        ((frame.height() as f32 * scale) as u32).max(1),
    );
    // SIMD resize: the screen must cost far less than inference.
    let small = crate::model::preprocess::resize_rgb(frame, w, h);
    let ox = area.top_left.x as u32 + (aw - w) / 2;
    let oy = area.top_left.y as u32 + (ah - h) / 2;
    image::imageops::replace(&mut canvas.0, &small, ox as i64, oy as i64);
}

struct Fonts {
    mid: U8g2TextStyle<Rgb888>,
    small: U8g2TextStyle<Rgb888>,
}

fn text(canvas: &mut Canvas, s: &str, at: Point, style: U8g2TextStyle<Rgb888>, align: Alignment) {
    let ts = TextStyleBuilder::new()
        .baseline(Baseline::Top)
        .alignment(align)
        .build();
    let _ = Text::with_text_style(s, at, style, ts).draw(canvas);
}

fn styled(font: u8, color: Rgb888) -> U8g2TextStyle<Rgb888> {
    match font {
        0 => U8g2TextStyle::new(fonts::u8g2_font_helvB24_tr, color),
        1 => U8g2TextStyle::new(fonts::u8g2_font_helvB18_tr, color),
        2 => U8g2TextStyle::new(fonts::u8g2_font_helvB14_tr, color),
        3 => U8g2TextStyle::new(fonts::u8g2_font_helvR12_tr, color),
        _ => U8g2TextStyle::new(fonts::u8g2_font_helvR08_tr, color),
    }
}

/// The headline and its colour for the current state.
fn headline(state: &DisplayState) -> (String, Rgb888) {
    match &state.source {
        SourceStatus::Disconnected(_) => ("Camera disconnected".into(), WARN),
        SourceStatus::Starting if state.top.is_empty() => ("Starting...".into(), DIM),
        _ => {
            if let Some(h) = state.result_headline() {
                let colour = match state.outcome() {
                    Some(Outcome::Retake | Outcome::NotLesion) => WARN,
                    Some(Outcome::Uncertain) => UNSURE,
                    _ => FG,
                };
                (h, colour)
            } else {
                ("Waiting for image".into(), DIM)
            }
        }
    }
}

fn status_line(state: &DisplayState) -> String {
    let src = match &state.source {
        SourceStatus::Starting => "starting".to_string(),
        SourceStatus::Live => "live".to_string(),
        SourceStatus::Disconnected(why) => format!("camera: {why}"),
        SourceStatus::Ended => "source ended".to_string(),
    };
    format!(
        "{}{} | {} | {:.1} fps | {:.0} ms",
        if state.frozen { "FROZEN | " } else { "" },
        src,
        state.model_name,
        state.fps,
        state.inference_ms
    )
}

/// Where everything goes on a canvas of a given size.
struct Layout {
    /// At least 480 x 400: the bigger fonts and spacing.
    large: bool,
    pad: i32,
    frame_area: Rectangle,
    /// The text panel: beside the frame when wide, else below it.
    panel: Rectangle,
    fonts: Fonts,
}

impl Layout {
    /// A side panel when the screen is wide enough (>= 480 px and wider than tall), else the
    /// frame on top and text below.
    fn new(
        Size {
            width: w,
            height: h,
        }: Size,
    ) -> Layout {
        let wide = w >= 480 && w > h;
        let large = w >= 480 && h >= 400;
        let fonts = if large {
            Fonts {
                mid: styled(3, FG),
                small: styled(4, DIM),
            }
        } else {
            Fonts {
                mid: styled(4, FG),
                small: styled(4, DIM),
            }
        };
        let pad = if large { 12 } else { 4 } as i32;
        let (frame_area, panel) = if wide {
            let fw = h.min(w * 3 / 5);
            (
                Rectangle::new(Point::zero(), Size::new(fw, h)),
                Rectangle::new(Point::new(fw as i32, 0), Size::new(w - fw, h)),
            )
        } else {
            // Text panel: headline, bar, 3 classes, status, disclaimer.
            let ph = (h * 11 / 20).max(110).min(h);
            (
                Rectangle::new(Point::zero(), Size::new(w, h - ph)),
                Rectangle::new(Point::new(0, (h - ph) as i32), Size::new(w, ph)),
            )
        };
        Layout {
            large,
            pad,
            frame_area,
            panel,
            fonts,
        }
    }

    /// Left edge of the panel's text.
    fn x(&self) -> i32 {
        self.panel.top_left.x + self.pad
    }

    /// Width of the panel's text.
    fn text_width(&self) -> i32 {
        self.panel.size.width as i32 - 2 * self.pad
    }

    /// Height of a line of headline (`big`) or class text.
    fn line(&self, big: bool) -> i32 {
        match (big, self.large) {
            (true, true) => 34,
            (true, false) => 20,
            (false, true) => 20,
            (false, false) => 12,
        }
    }

    /// Text style for secondary text in `color`.
    fn secondary(&self, color: Rgb888) -> U8g2TextStyle<Rgb888> {
        if self.large {
            styled(3, color)
        } else {
            styled(4, color)
        }
    }
}

/// The refer banner across the bottom of the picture: seen together with the lesion, never
/// hides the text.
fn draw_refer_banner(canvas: &mut Canvas, l: &Layout, state: &DisplayState) {
    let area = l.frame_area;
    let bh: u32 = if l.large { 40 } else { 20 };
    let top = area.top_left.y + area.size.height as i32 - bh as i32;
    let _ = Rectangle::new(
        Point::new(area.top_left.x, top),
        Size::new(area.size.width, bh),
    )
    .into_styled(PrimitiveStyle::with_fill(REFER_BG))
    .draw(canvas);
    let label = if area.size.width >= 300 {
        format!(
            "REFER: see a clinician ({:.0}% malignant)",
            state.malignant_probability * 100.0
        )
    } else {
        "REFER to a clinician".to_string()
    };
    text(
        canvas,
        &label,
        Point::new(
            area.top_left.x + area.size.width as i32 / 2,
            top + if l.large { 8 } else { 3 },
        ),
        l.secondary(FG),
        Alignment::Center,
    );
}

/// The confidence bar for the top class (grey when uncertain or retake), then the top three
/// classes, from `y` down.
fn draw_classes(canvas: &mut Canvas, l: &Layout, state: &DisplayState, mut y: i32) {
    let Some((_, p)) = state.top.first() else {
        return;
    };
    let (x, pw, large, mid) = (l.x(), l.text_width(), l.large, &l.fonts.mid);
    let bh = if large { 18 } else { 10 };
    let bw = (pw - if large { 70 } else { 40 }).max(10);
    let _ = Rectangle::new(Point::new(x, y), Size::new(bw as u32, bh))
        .into_styled(PrimitiveStyle::with_fill(BAR_BG))
        .draw(canvas);
    let fill = ((bw as f32) * p.clamp(0.0, 1.0)) as u32;
    let c = if state.uncertain || state.quality.is_some() {
        UNSURE
    } else {
        OK
    };
    let _ = Rectangle::new(Point::new(x, y), Size::new(fill, bh))
        .into_styled(PrimitiveStyle::with_fill(c))
        .draw(canvas);
    text(
        canvas,
        &format!("{:.0}%", p * 100.0),
        Point::new(x + pw, y + if large { -2 } else { -1 }),
        mid.clone(),
        Alignment::Right,
    );
    y += bh as i32 + if large { 14 } else { 5 };
    for (name, p) in state.top.iter().take(3) {
        text(canvas, name, Point::new(x, y), mid.clone(), Alignment::Left);
        text(
            canvas,
            &format!("{:.0}%", p * 100.0),
            Point::new(x + pw, y),
            mid.clone(),
            Alignment::Right,
        );
        y += l.line(false);
    }
}

/// Status and the disclaimer, anchored to the bottom of the panel.
fn draw_footer(canvas: &mut Canvas, l: &Layout, state: &DisplayState) {
    let (x, pad) = (l.x(), l.pad);
    let bottom = l.panel.top_left.y + l.panel.size.height as i32;
    let small_h = if l.large { 14 } else { 10 };
    text(
        canvas,
        &status_line(state),
        Point::new(x, bottom - 2 * small_h - pad / 2),
        l.fonts.small.clone(),
        Alignment::Left,
    );
    let disclaimer = if l.text_width() < 300 {
        "Not a diagnosis - research use only"
    } else {
        crate::DISCLAIMER
    };
    text(
        canvas,
        disclaimer,
        Point::new(x, bottom - small_h - pad / 2 + if l.large { -4 } else { 0 }),
        l.secondary(WARN),
        Alignment::Left,
    );
}

/// Draw the whole screen (layout: [`Layout::new`]).
pub fn render(canvas: &mut Canvas, frame: Option<&RgbImage>, state: &DisplayState) {
    let l = Layout::new(canvas.size());
    let _ = canvas.clear(BG);
    if let Some(fr) = frame {
        if l.frame_area.size.height > 8 {
            draw_frame(canvas, fr, l.frame_area);
        }
    }
    if state.shows_refer() {
        draw_refer_banner(canvas, &l, state);
    }
    if state.frozen {
        let _ = l
            .frame_area
            .into_styled(PrimitiveStyle::with_stroke(OK, 3))
            .draw(canvas);
    }
    let x = l.x();
    let mut y = l.panel.top_left.y + l.pad / 2;
    let (head, color) = headline(state);
    let big = if l.large {
        styled(0, color)
    } else {
        styled(2, color)
    };
    text(canvas, &head, Point::new(x, y), big, Alignment::Left);
    y += l.line(true);
    // Not a lesion: no classes, only what to do.
    if state.outcome() == Some(Outcome::NotLesion) {
        text(
            canvas,
            NOT_LESION_ADVICE,
            Point::new(x, y),
            l.fonts.mid.clone(),
            Alignment::Left,
        );
    } else {
        draw_classes(canvas, &l, state, y);
    }
    draw_footer(canvas, &l, state);
}
