//! Camera frame converters: YUYV and MJPEG buffers of any length, with any claimed size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    // The first bytes choose the frame size the "camera" claims (up to 4096x4096).
    let w = u16::from_le_bytes([data[0], data[1]]) as u32 % 4097;
    let h = u16::from_le_bytes([data[2], data[3]]) as u32 % 4097;
    let buf = &data[5..];
    if data[4] & 1 == 0 {
        if let Ok(img) = dermcam::source::yuyv_to_rgb(buf, w, h) {
            assert_eq!((img.width(), img.height()), (w, h));
            assert!(buf.len() >= (w * h * 2) as usize);
        }
    } else if let Ok(img) = dermcam::source::mjpeg_to_rgb(buf, 4_000_000) {
        assert!(img.width() as u64 * img.height() as u64 <= 4_000_000);
    }
});
