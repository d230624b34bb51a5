//! Bounds a client must respect, the same in the server and every client.
//! Limits an operator can change (frame size, message rate) are announced
//! in the `hello` frame instead.

/// Most lines in one cart reservation.
pub const CART_LINES_MAX: usize = 16;
/// Longest SKU or show id: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub const SKU_ID_BYTES_MAX: usize = 64;
/// Longest buyer id or request id a client may send.
pub const ID_BYTES_MAX: usize = 128;
/// Longest product title.
pub const TITLE_BYTES_MAX: usize = 200;
/// Longest product image URL.
pub const IMAGE_URL_BYTES_MAX: usize = 2048;
/// Most units one SKU can hold in all (21 bits of the engine's stock word).
pub const SKU_UNITS_MAX: u32 = (1 << 21) - 1;
