//! ferrocorn
