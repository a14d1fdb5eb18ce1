// The public surface of the vendored qrcode-generator 2.0.4 bundle: only the encoder
// (qrcode(type, level), addData, make, getModuleCount, isDark). The page draws the
// modules itself with DOM calls (static/qr.js), so the library's string builders
// (createSvgTag, createImgTag, createTableTag) are never used to make markup.
export { qrcode } from "qrcode-generator";
