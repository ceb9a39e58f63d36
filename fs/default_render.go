package fs

import "github.com/ckptfs/ckptfs/image"

// defaultRender is the renderer used when Options.Render is nil.
var defaultRender RenderFunc = image.Render
