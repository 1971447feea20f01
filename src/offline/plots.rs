//! Report figures (plotters): the confusion matrix and the refer ROC curve.

use crate::offline::eval::ReferFigures;
use crate::offline::metrics::Summary;
use std::path::Path;

/// A figure that plotters could not draw (its backend errors are not `'static`: kept as text).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(pub String);

/// ROC curve of the malignant probability, with the manifest's operating point marked.
pub(crate) fn draw_roc(r: &ReferFigures, title: &str, path: &Path) -> Result<(), PlotError> {
    use plotters::prelude::*;
    use plotters::style::{FontStyle, register_font};
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let e = |e: &dyn std::fmt::Display| PlotError(e.to_string());
    let root = BitMapBackend::new(path, (640, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("false-positive rate (1 - specificity)")
        .y_desc("sensitivity")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            RGBColor(180, 180, 180),
        )))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            r.roc.clone(),
            BLUE.stroke_width(2),
        )))
        .map_err(|x| e(&x))?
        .label(format!(
            "malignant probability (AUC {})",
            r.auc.map_or("n/a".into(), |a| format!("{a:.3}"))
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if let (Some(se), Some(sp)) = (r.sensitivity, r.specificity) {
        chart
            .draw_series(std::iter::once(Circle::new(
                (1.0 - sp, se),
                7,
                RED.filled(),
            )))
            .map_err(|x| e(&x))?
            .label(format!(
                "refer threshold {:.3}: sensitivity {se:.2}, specificity {sp:.2}",
                r.threshold
            ))
            .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

pub(crate) fn draw_confusion(s: &Summary, title: &str, path: &Path) -> Result<(), PlotError> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    use plotters::style::{FontStyle, register_font};
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let e = |e: &dyn std::fmt::Display| PlotError(e.to_string());
    let k = s.per_class.len();
    let kf = k as f64;
    let root = BitMapBackend::new(path, (900, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}  (rows: true, columns: predicted)"),
            ("sans-serif", 16),
        )
        .margin_top(10)
        .margin_right(20)
        .margin_left(240)
        .margin_bottom(200)
        .build_cartesian_2d(0f64..kf, 0f64..kf)
        .map_err(|x| e(&x))?;
    let centre = Pos::new(HPos::Center, VPos::Center);
    for r in 0..k {
        for c in 0..k {
            let v = s.confusion_matrix_normalized[r][c];
            let shade = (255.0 * (1.0 - 0.85 * v)) as u8;
            let y = kf - 1.0 - r as f64;
            let x = c as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    RGBColor(shade, shade, 255).filled(),
                )))
                .map_err(|x| e(&x))?;
            let color = if v > 0.5 { WHITE } else { BLACK };
            let label = format!("{}", s.confusion_matrix[r][c]);
            chart
                .draw_series(std::iter::once(Text::new(
                    label,
                    (x + 0.5, y + 0.5),
                    ("sans-serif", 15).into_font().color(&color).pos(centre),
                )))
                .map_err(|x| e(&x))?;
        }
    }
    // Class names outside the plotting area, centred on their row / column.
    for (i, m) in s.per_class.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(0.0, kf - i as f64 - 0.5));
        let style = ("sans-serif", 13)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(m.class.clone(), (px - 8, py), style))
            .map_err(|x| e(&x))?;
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let style = ("sans-serif", 13)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(m.class.clone(), (px, py + 8), style))
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
